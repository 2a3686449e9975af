"""Prefill/decode disaggregation, the parts both placements share (PROTOCOLS.md section 4).

llm-d runs the prefill of a disaggregated request in one of two places: (a) the gateway orchestrates
(``placement: gateway``: ``gateway.dispatch`` sends the prefill, then the decode with the returned
``kv_transfer_params``), or (b) the decode pod's sidecar does (``placement: sidecar``: the gateway/EPP only
names the prefill endpoint in ``x-prefiller-host-port`` and ``lanterna sidecar`` runs both legs). Exactly one of
them runs the prefill of a request: in (a) the decode request never carries ``x-prefiller-host-port``, and a
sidecar that receives a body already carrying ``do_remote_prefill`` does not prefill again.

The sidecar trusts ``x-prefiller-host-port`` only for targets on its allow-list (``PrefillerAllowList``): the
header names a host the sidecar will POST to, so an unchecked value is a server-side request forgery.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from lanterna.errors import Forbidden, InvalidRequest, LanternaError

PDPlacement = Literal["gateway", "sidecar"]

# llm-d's decision_type values (llm_d_inference_scheduler_disagg_decision_total).
DECISION_DECODE_ONLY = "decode-only"
DECISION_PREFILL_DECODE = "prefill-decode"

# Why a prefill leg gave no kv_transfer_params (the decode endpoint then prefills locally: aggregated serving).
FallbackReason = Literal["connect", "timeout", "unhealthy", "error", "http_5xx", "http_4xx", "no_kv_params"]



class PrefillerNotAllowed(LanternaError):
    """``x-prefiller-host-port`` names an endpoint that is not on the sidecar's allow-list (403, as ``Forbidden``,
    without its ``model_not_allowed`` code)."""

    status = 403
    error_type = Forbidden.error_type


KV_PREFILL_PARAMS: dict[str, Any] = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                                     "remote_block_ids": None, "remote_host": None, "remote_port": None}


def prefill_fields(chat: bool) -> dict[str, object]:
    """Top-level body fields of the prefill leg: ``do_remote_decode``, one token, non-streaming
    (``None`` removes a field, as ``routing.fields.rewrite_body`` reads it)."""
    extra: dict[str, object] = {"kv_transfer_params": KV_PREFILL_PARAMS, "stream": False, "stream_options": None,
                                "max_tokens": 1}
    if chat:
        extra["max_completion_tokens"] = 1
    return extra


def kv_params_of(prefill_response: bytes) -> dict[str, Any] | None:
    """The ``kv_transfer_params`` object of a prefill response, verbatim; None when absent or not an object."""
    try:
        data = msgspec.json.decode(prefill_response)
    except msgspec.DecodeError:
        return None
    kv = data.get("kv_transfer_params") if isinstance(data, dict) else None
    return kv if isinstance(kv, dict) else None


def already_prefilled(body: Any) -> bool:
    """The body carries a prefill's result (``do_remote_prefill``): whoever sent it ran the prefill already."""
    if not isinstance(body, dict):
        return False
    kv = body.get("kv_transfer_params")
    return isinstance(kv, dict) and bool(kv.get("do_remote_prefill"))


def _normal(host_port: str) -> str:
    host, sep, port = host_port.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidRequest(f"x-prefiller-host-port must be host:port, got {host_port[:100]!r}")
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if any(c in host for c in "/@?#\\ ") or not host:
        raise InvalidRequest(f"x-prefiller-host-port must be host:port, got {host_port[:100]!r}")
    return f"{host}:{int(port)}"


@dataclass(frozen=True, slots=True)
class PrefillerAllowList:
    """The prefill endpoints a sidecar may call (exact ``host:port``, case-insensitive host).

    Built from flags, config and discovery (endpoints labelled ``llm-d.ai/role: prefill``); ``check`` answers
    400 for a malformed value and 403 for a well-formed one that is not listed."""

    allowed: frozenset[str]

    @classmethod
    def of(cls, targets: Iterable[str]) -> PrefillerAllowList:
        return cls(frozenset(_normal(t) for t in targets))

    def with_targets(self, targets: Iterable[str]) -> PrefillerAllowList:
        return PrefillerAllowList(self.allowed | {_normal(t) for t in targets})

    def check(self, header: str) -> str:
        """The normalised target, if allowed; ``InvalidRequest`` (400) or ``PrefillerNotAllowed`` (403) otherwise."""
        if "," in header:
            raise InvalidRequest("x-prefiller-host-port must name one prefill endpoint")
        target = _normal(header)
        if target not in self.allowed:
            raise PrefillerNotAllowed(f"prefill endpoint {target!r} is not on this sidecar's allow-list")
        return target
