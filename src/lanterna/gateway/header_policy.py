"""Which client headers may travel upstream, and whose credential goes with them.

Never forwarded from a client: hop-by-hop and recomputed headers; ``content-encoding`` (the gateway forwards
the decompressed body, see ``gateway.edge``); the client's own credential (``authorization``,
``x-api-key``): the backends' key replaces it when one is configured; and the llm-d routing headers that only
the gateway/EPP may set, because an llm-d decode sidecar trusts them (``x-prefiller-host-port`` from a client
is an SSRF through the sidecar). ``x-gateway-model-name-rewrite`` passes only when config allows it.
Everything is decided once per request in one pass over the headers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

# Hop-by-hop (RFC 9110 section 7.6.1) and recomputed by the gateway for the upstream request.
_HOP_AND_RECOMPUTED = ("host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding",
                       "expect", "upgrade", "te", "trailer", "proxy-connection", "proxy-authorization",
                       "content-encoding", "content-type", "x-request-id",
                       "x-request-timeout",  # the gateway's own deadline header: the replica gets no say
                       "traceparent", "tracestate")  # the request's trace injects its own (valid) context
CLIENT_CREDENTIALS = ("authorization", "x-api-key")
# Set by the gateway / EPP for the model server or its sidecar (PROTOCOLS.md sections 4 and 6).
INTERNAL_ROUTING = ("x-prefiller-host-port", "x-gateway-destination-endpoint",
                    "x-gateway-destination-endpoint-served", "x-llm-d-request-dropped-reason")
MODEL_REWRITE = "x-gateway-model-name-rewrite"
# Client-facing llm-d headers that are *not* internal (the objective and fairness aliases are read by the
# gateway; forwarding them is harmless). Every other ``x-llm-d-`` header is treated as internal.
_LLMD_CLIENT = frozenset(("x-llm-d-inference-objective", "x-llm-d-inference-fairness-id"))

_DROP = frozenset((*_HOP_AND_RECOMPUTED, *CLIENT_CREDENTIALS, *INTERNAL_ROUTING))


def upstream_headers(incoming: Mapping[str, str] | Iterable[tuple[str, str]], request_id: str, *,
                     upstream_api_key: str | None = None, allow_model_rewrite: bool = False,
                     extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers for the upstream request: the client's, filtered, plus ``x-request-id``, ``content-type`` and
    the backends' credential. ``extra`` (set by the gateway itself, e.g. ``x-prefiller-host-port``) wins."""
    items = incoming.items() if isinstance(incoming, Mapping) else incoming
    out: dict[str, str] = {}
    for k, v in items:
        low = k.lower()
        if low in _DROP or (low.startswith("x-llm-d-") and low not in _LLMD_CLIENT):
            continue
        if low == MODEL_REWRITE and not allow_model_rewrite:
            continue
        out[k] = v
    out["x-request-id"] = request_id
    out["content-type"] = "application/json"
    if upstream_api_key:
        out["authorization"] = "Bearer " + upstream_api_key
    if extra:
        out.update(extra)
    return out


def load_upstream_api_key(env_var: str | None, file: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The backends' own key: the file wins over the env var (a mounted secret rotates without a restart
    of the env); surrounding whitespace is dropped. None when neither is configured or both are empty."""
    if file:
        text = Path(file).read_text(encoding="utf-8").strip()
        if text:
            return text
    if env_var:
        return environ.get(env_var, "").strip() or None
    return None


def filter_hint(endpoint_hint: str | None, known_endpoints: Iterable[str]) -> str | None:
    """A client's endpoint hint (``x-gateway-destination-endpoint``, possibly a comma list of fallbacks)
    reduced to the endpoints the gateway knows; None when nothing known remains, so routing ignores it."""
    if not endpoint_hint:
        return None
    known = known_endpoints if isinstance(known_endpoints, (set, frozenset, dict)) else set(known_endpoints)
    kept = [h for h in (p.strip() for p in endpoint_hint.split(",")) if h and h in known]
    return ",".join(kept) if kept else None
