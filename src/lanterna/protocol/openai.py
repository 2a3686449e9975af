"""OpenAI API as vLLM 0.32 serves it (PROTOCOLS.md section 3): request Structs, validation, responses.

Requests decode once with msgspec; only on failure do we re-parse with ``json`` to reproduce vLLM's
(FastAPI/pydantic) error texts exactly, so the happy path stays fast. Response builders emit the exact key
sets and order of ``reference/vllm-0.32-cpu`` (nulls included) as bytes ready to send.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import msgspec

from lanterna.errors import InvalidRequest, ModelNotFound, ValidationFailed

SYSTEM_FINGERPRINT = "vllm-0.32.0-f3ced910"
DONE_FRAME = b"data: [DONE]\n\n"


class StreamOptions(msgspec.Struct, omit_defaults=True):
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


class KVTransferParams(msgspec.Struct):
    """llm-d / NixlConnector P/D parameters; unknown keys are ignored."""

    do_remote_decode: bool = False
    do_remote_prefill: bool = False
    remote_engine_id: str | None = None
    remote_block_ids: list[Any] | None = None
    remote_host: str | None = None
    remote_port: int | None = None
    tp_size: int = 1


class _Common(msgspec.Struct, kw_only=True):
    model: str | None = None
    n: int = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    cache_salt: str | None = None
    kv_transfer_params: KVTransferParams | None = None
    priority: int = 0
    user: str | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def continuous_usage(self) -> bool:
        so = self.stream_options
        return bool(so and so.include_usage and so.continuous_usage_stats)


class CompletionRequest(_Common, kw_only=True):
    prompt: str | list[Any] | None = None
    max_tokens: int | None = 16
    echo: bool | None = False


class ChatMessage(msgspec.Struct):
    role: str
    content: str | list[Any] | None = None
    name: str | None = None


class ChatCompletionRequest(_Common, kw_only=True):
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


class TokenizeRequest(msgspec.Struct, kw_only=True):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    return_token_strs: bool | None = False


class DetokenizeRequest(msgspec.Struct, kw_only=True):
    tokens: list[int]
    model: str | None = None


class LoadLoraRequest(msgspec.Struct, kw_only=True):
    lora_name: str
    lora_path: str = ""


class UnloadLoraRequest(msgspec.Struct, kw_only=True):
    lora_name: str
    lora_int_id: int | None = None


_REQUIRED: dict[type, tuple[str, ...]] = {
    ChatCompletionRequest: ("messages",), DetokenizeRequest: ("tokens",),
    LoadLoraRequest: ("lora_name",), UnloadLoraRequest: ("lora_name",),
}


def _validation_error(err: dict[str, Any]) -> ValidationFailed:
    """vLLM's FastAPI handler text: ``1 validation error:\\n  {pydantic error dict repr}``."""
    return ValidationFailed(f"1 validation error:\n  {err!r}", param=err["loc"])


T = TypeVar("T")


def decode_request(body: bytes, cls: type[T]) -> T:
    """Decode a request body, raising ``ValidationFailed`` with vLLM's exact message on bad input."""
    try:
        return msgspec.json.decode(body, type=cls)
    except msgspec.DecodeError:
        pass
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        msg, pos = (exc.msg, exc.pos) if isinstance(exc, json.JSONDecodeError) else ("Invalid UTF-8", exc.start)
        raise _validation_error({"type": "json_invalid", "loc": f"body.{pos}", "msg": "JSON decode error",
                                 "input": "<dict of 0 items>", "ctx": {"error": msg}}) from None
    if not isinstance(obj, dict):
        raise _validation_error({"type": "model_attributes_type", "loc": "body",
                                 "msg": "Input should be a valid dictionary or object to extract fields from",
                                 "input": obj})
    for name in _REQUIRED.get(cls, ()):
        if name not in obj:
            raise _validation_error({"type": "missing", "loc": f"body.{name}", "msg": "Field required",
                                     "input": f"<dict of {len(obj)} items>"})
    try:
        return msgspec.convert(obj, type=cls)
    except msgspec.ValidationError as exc:
        text = str(exc)
        path = text.rsplit(" - at `$.", 1)
        loc = "body." + path[1].rstrip("`").replace("[", ".").replace("]", "") if len(path) == 2 else "body"
        raise _validation_error({"type": "value_error", "loc": loc, "msg": path[0],
                                 "input": f"<dict of {len(obj)} items>"}) from None


def resolve_model(requested: str | None, served: Sequence[str], adapters: Iterable[str]) -> tuple[str, str | None]:
    """-> (model name to echo, LoRA adapter or None). No ``model`` field means the first served name."""
    if requested is None or requested in served:
        return (requested or served[0]), None
    names = list(adapters)
    if requested in names:
        return requested, requested
    aliases = ", ".join(served)  # NOTE: real vLLM lists base names only, even with adapters loaded
    raise ModelNotFound(f"The model `{requested}` does not exist. Valid aliases: {aliases}.", param="model")


def check_max_tokens(max_tokens: int | None, max_model_len: int) -> None:
    if max_tokens is None:
        return
    if max_tokens < 1:
        raise InvalidRequest(f"max_tokens must be at least 1, got {max_tokens}. "
                             f"(parameter=max_tokens, value={max_tokens})", param="max_tokens")
    if max_tokens > max_model_len:
        raise InvalidRequest(f"max_tokens={max_tokens} cannot be greater than max_model_len={max_model_len}. "
                             f"Please request fewer output tokens. (parameter=max_tokens, value={max_tokens})",
                             param="max_tokens")


def check_prompt_len(num_prompt_tokens: int, max_model_len: int, *, from_text: bool = False) -> None:
    """A prompt that leaves no room for one output token is a 400; prompt + max_tokens over is not.

    vLLM tokenizes text with truncation at ``max_model_len + 1``, so for text it reports that count."""
    if num_prompt_tokens >= max_model_len:
        if from_text:
            num_prompt_tokens = min(num_prompt_tokens, max_model_len + 1)
        raise InvalidRequest(
            f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains at "
            f"least {num_prompt_tokens} input tokens, which exceeds this limit even without any output tokens. "
            f"Please reduce the length of the input prompt. (parameter=input_tokens, value={num_prompt_tokens})",
            param="input_tokens")


def check_supported(req: _Common) -> None:
    if req.n != 1:
        raise InvalidRequest(f"n={req.n} is not supported by the simulator; use n=1. (parameter=n, value={req.n})",
                             param="n")


def completion_prompt(req: CompletionRequest) -> str | list[int]:
    """The prompt as text or token ids (one prompt per request; batched prompts are rejected)."""
    p = req.prompt
    if p is None:
        raise InvalidRequest("Either prompt or prompt_embeds must be provided and non-empty.", param="prompt")
    if isinstance(p, str):
        return p
    if len(p) == 1 and isinstance(p[0], str | list):
        p = p[0]
        if isinstance(p, str):
            return p
    if p and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in p):
        return list(p)
    raise InvalidRequest("prompt must be a string, a list of token ids, or a one-element list of either "
                         "(batched prompts are not supported by the simulator)", param="prompt")


def chat_messages(req: ChatCompletionRequest | TokenizeRequest) -> list[dict[str, Any]]:
    """Messages as plain dicts for the chat template; content parts are joined to text."""
    out: list[dict[str, Any]] = []
    for m in req.messages or ():
        content = m.content
        if isinstance(content, list):
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        out.append({"role": m.role, "content": content or ""})
    return out


def new_id(prefix: str) -> str:
    """``cmpl-``/``chatcmpl-`` + 16 hex digits, as vLLM 0.32 makes them."""
    return f"{prefix}{secrets.token_hex(8)}"


def error_frame(body: dict[str, Any]) -> bytes:
    """An error after streaming began: one ``data:`` frame; the caller then sends ``[DONE]``."""
    return b"data: " + msgspec.json.encode(body) + b"\n\n"


# ---- response builders: exact vLLM 0.32 key sets and order -------------------------------------------------

_enc = msgspec.json.Encoder()


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int, *, chat: bool,
          stream: bool) -> dict[str, Any]:
    """``usage``; streams carry a shorter ``prompt_tokens_details`` than full responses."""
    if stream:
        details: dict[str, Any] = {"cached_tokens": cached_tokens}
        if chat:
            details["created_cache_tokens"] = 0
    else:
        details = {"cached_tokens": cached_tokens, "created_cache_tokens": 0 if chat else None,
                   "multimodal_tokens": None}
    out: dict[str, Any] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
                           "completion_tokens": completion_tokens, "prompt_tokens_details": details}
    if not stream:
        out["completion_tokens_details"] = None
    return out


def completion_body(rid: str, created: int, model: str, text: str, finish_reason: str | None,
                    usage_: dict[str, Any], kv_transfer_params: dict[str, Any] | None = None) -> bytes:
    return _enc.encode({
        "id": rid, "object": "text_completion", "created": created, "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
                     "stop_reason": None, "token_ids": None, "prompt_logprobs": None, "prompt_token_ids": None,
                     "routed_experts": None}],
        "service_tier": None, "system_fingerprint": SYSTEM_FINGERPRINT, "usage": usage_,
        "kv_transfer_params": kv_transfer_params, "ec_transfer_params": None, "metrics": None})


def chat_body(rid: str, created: int, model: str, text: str, finish_reason: str | None,
              usage_: dict[str, Any], kv_transfer_params: dict[str, Any] | None = None) -> bytes:
    return _enc.encode({
        "id": rid, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                             "annotations": None, "audio": None, "function_call": None,
                                             "reasoning": None},
                     "logprobs": None, "finish_reason": finish_reason, "stop_reason": None, "token_ids": None,
                     "routed_experts": None}],
        "service_tier": None, "system_fingerprint": SYSTEM_FINGERPRINT, "usage": usage_,
        "prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None,
        "kv_transfer_params": kv_transfer_params, "ec_transfer_params": None, "metrics": None})


def _frame(obj: dict[str, Any]) -> bytes:
    return b"data: " + _enc.encode(obj) + b"\n\n"


def _tail(obj: dict[str, Any], usage_: dict[str, Any] | None, last: bool) -> bytes:
    """Continuous usage on every chunk; the fingerprint on the terminal chunk when no usage chunk follows."""
    if usage_ is not None:
        obj["usage"] = usage_
    if last:
        obj["system_fingerprint"] = SYSTEM_FINGERPRINT
    return _frame(obj)


def running_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """``stream_options.continuous_usage_stats``: the short usage vLLM puts on every chunk."""
    return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens}


def completion_chunk(rid: str, created: int, model: str, text: str, finish_reason: str | None,
                     usage_: dict[str, Any] | None = None, last: bool = False) -> bytes:
    """``last``: terminal chunk of a stream without a trailing usage chunk (gets ``system_fingerprint``)."""
    return _tail({"id": rid, "object": "text_completion", "created": created, "model": model,
                  "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
                               "stop_reason": None, "prompt_token_ids": None, "token_ids": None}]}, usage_, last)


def chat_role_chunk(rid: str, created: int, model: str, usage_: dict[str, Any] | None = None) -> bytes:
    obj: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]}
    if usage_ is not None:
        obj["usage"] = usage_
    obj["prompt_token_ids"] = None
    obj["prompt_text"] = None
    return _frame(obj)


def chat_chunk(rid: str, created: int, model: str, text: str, finish_reason: str | None,
               usage_: dict[str, Any] | None = None, last: bool = False) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": {"content": text}, "logprobs": None,
                              "finish_reason": finish_reason}
    if finish_reason is not None:
        choice["stop_reason"] = None
    choice["token_ids"] = None
    return _tail({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                  "choices": [choice]}, usage_, last)


def usage_chunk(rid: str, created: int, model: str, usage_: dict[str, Any], *, chat: bool) -> bytes:
    return _frame({"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                   "created": created, "model": model, "choices": [], "usage": usage_,
                   "system_fingerprint": SYSTEM_FINGERPRINT})


def model_card(name: str, created: int, root: str, parent: str | None, max_model_len: int | None) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "vllm", "root": root, "parent": parent,
            "max_model_len": max_model_len,
            "permission": [{"id": new_id("modelperm-"), "object": "model_permission", "created": created,
                            "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                            "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                            "organization": "*", "group": None, "is_blocking": False}]}


def encode_json(obj: Any) -> bytes:
    return _enc.encode(obj)
