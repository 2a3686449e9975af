"""Parse only what routing needs from an OpenAI request body; the body itself is forwarded untouched.

Decoding into a small msgspec Struct skips every field we do not name (sampling params, tools, ...),
and ``msgspec.Raw`` keeps ``prompt``/``messages`` as the original JSON bytes: for chat, the approximate
prefix index hashes the JSON of *all* messages (llm-d's rule), so two conversations sharing only a
system prompt do not look like the same prefix.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from lanterna.errors import ValidationFailed

HDR_OBJECTIVE = ("x-gateway-inference-objective", "x-llm-d-inference-objective")
HDR_FAIRNESS = ("x-gateway-inference-fairness-id", "x-llm-d-inference-fairness-id")
HDR_MODEL_REWRITE = "x-gateway-model-name-rewrite"
HDR_SESSION = "x-session-token"
HDR_REQUEST_ID = "x-request-id"
HDR_PREFILLER = "x-prefiller-host-port"
HDR_DESTINATION = "x-gateway-destination-endpoint"
HDR_REQUEST_TIMEOUT = "x-request-timeout"  # seconds the client gives the whole request (bounded by config)
HDR_SLO_TTFT = "x-slo-ttft-ms"  # llm-d's per-request TTFT objective, milliseconds
HDR_SLO_TPOT = "x-slo-tpot-ms"  # llm-d's per-request TPOT objective, milliseconds

_EMPTY = msgspec.Raw()


class RoutingFields(msgspec.Struct):
    model: str | None = None
    prompt: msgspec.Raw = _EMPTY
    messages: msgspec.Raw = _EMPTY
    stream: bool | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    cache_salt: str | None = None


_decode = msgspec.json.Decoder(RoutingFields).decode
_decode_str = msgspec.json.Decoder(str).decode
_decode_ints = msgspec.json.Decoder(list[int]).decode


def parse_body(body: bytes, kind: str) -> RoutingFields:
    """Decode and check the few fields routing relies on; vLLM validates the rest."""
    try:
        fields = _decode(body)
    except msgspec.ValidationError as exc:  # first: it subclasses DecodeError
        path = str(exc).rpartition("at `$.")[2].rstrip("`") if "at `$." in str(exc) else ""
        raise ValidationFailed(f"1 validation error: {exc}", param=f"body.{path}" if path else "body") from None
    except msgspec.DecodeError as exc:
        raise ValidationFailed(f"JSON decode error: {exc}", param="body") from None
    if kind == "chat":
        if not fields.messages:
            raise ValidationFailed("1 validation error: messages: Field required", param="body.messages")
    elif not fields.prompt:
        raise ValidationFailed("1 validation error: prompt: Field required", param="body.prompt")
    return fields


def prompt_text(fields: RoutingFields, kind: str) -> str:
    """The text the approximate prefix index hashes: the prompt string, or the JSON of all messages."""
    raw = bytes(fields.messages if kind == "chat" else fields.prompt)
    if kind == "completions" and raw[:1] == b'"':
        return _decode_str(raw)
    return raw.decode("utf-8", "replace")


def prompt_token_ids(fields: RoutingFields, kind: str) -> list[int] | None:
    """Token ids when the client sent them (completions ``prompt: [int, ...]``)."""
    raw = bytes(fields.prompt) if kind == "completions" else b""
    if raw[:1] != b"[":
        return None
    try:
        return _decode_ints(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def first_header(headers: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for n in names:
        v = headers.get(n)
        if v:
            return v
    return None


def priority_for(objective: str | None, objectives: Mapping[str, int]) -> int:
    """Objective name -> priority via config; a bare integer is accepted as the priority itself."""
    if not objective:
        return 0
    if objective in objectives:
        return objectives[objective]
    try:
        return int(objective)
    except ValueError:
        return 0


def rewrite_body(body: bytes, **fields: object) -> bytes:
    """Re-encode the body with some top-level fields replaced (model rewrite, P/D); ``None`` removes."""
    data = msgspec.json.decode(body)
    for k, v in fields.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    return msgspec.json.encode(data)


def slo_seconds(headers: Mapping[str, str], name: str) -> float | None:
    """An SLO header (milliseconds, integer or decimal) in seconds; absent -> None, malformed -> 400."""
    v = headers.get(name)
    if v is None:
        return None
    try:
        ms = float(v)
    except ValueError:
        ms = -1.0
    if not (ms > 0 and ms < 1e9):
        raise ValidationFailed(f"{name} must be a positive number of milliseconds", param=name)
    return ms / 1e3
