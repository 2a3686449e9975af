"""HTTP routes: the two inference endpoints, ``/v1/models``, ``/health``, ``/metrics``, ``/debug/*``.

Inference path, per request (the hot path; no per-request allocations we can avoid), each step the routing
core's (``lanterna.routing.core``) except moving bytes (``dispatch``):

    prepare (parse, resolve model, candidates) -> admit (flow control, may queue) -> tokenize (precise only)
    -> schedule (pick + attempt order) -> attempts until one yields first bytes -> relay or answer
    -> complete (once, in ``finally``: response_complete, per-request metrics, the access-log line)

A request refused before it becomes a call (unreadable or too large body, 400, 404, 503 from ``prepare``) gets
its access-log line from ``core.rejected``. The request's trace (``gateway/tracing.py``) rides on the call.

``/health`` is liveness (200 while the process serves); ``/ready`` is readiness (503 while no endpoint is
ready for any model).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lanterna.auth.principal import Principal
from lanterna.errors import LanternaError
from lanterna.gateway.auth import principal_of, require_admin
from lanterna.gateway.dispatch import dispatch
from lanterna.gateway.edge import check_json_body, read_body
from lanterna.gateway.face import AiohttpReply, ClientRequest, Reply
from lanterna.gateway.middleware import http_error
from lanterna.gateway.state import GATEWAY, Gateway
from lanterna.gateway.tracing import request_trace
from lanterna.obs.logs import REQUEST_ID
from lanterna.obs.tracing import RequestTrace
from lanterna.routing import core
from lanterna.scheduler.framework.types import ApiKind

log = logging.getLogger(__name__)
_json = msgspec.json.encode
BodyReader = Callable[[], Awaitable[bytes]]


async def serve_inference(gw: Gateway, request: ClientRequest, kind: ApiKind, body: bytes | BodyReader,
                          principal: Principal, trace: RequestTrace, reply: Reply) -> None:
    """One inference request, whichever server carries it. ``body``: the bytes (already read, decompressed and
    checked by the server) or a reader that raises the edge's 400/408/413/415."""
    assert gw.auth is not None and gw.body_limits is not None
    started, rid = gw.clock.now(), REQUEST_ID.get() or ""
    raw = b""
    try:
        if isinstance(body, bytes):
            check_json_body(body, gw.body_limits.max_json_depth)  # 400: UTF-8, surrogates, depth
            raw = body  # only now: the access log of a refused body does not parse it
        else:
            raw = await body()
        call = core.prepare(gw, request.headers, raw, kind, request_id=rid, started=started, principal=principal)
    except LanternaError as err:
        core.rejected(gw, err, request.headers, raw, kind, request_id=rid, started=started, path=request.path,
                      client=request.remote, principal=principal)
        raise
    call.trace, call.path, call.client = trace, request.path, request.remote
    try:
        if principal.tokens_per_min is not None:  # a key with a token rate (others always pass)
            gw.auth.charge_tokens(principal, call.token_estimate)  # 429 per key; nothing is held yet
        async with core.admit(gw, call):
            if gw.tokenizer is not None:  # precise routing only: no coroutine otherwise
                await core.tokenize(gw, call)
            await dispatch(gw, request, call, reply)
    except LanternaError as err:
        call.status, call.error = err.status, core.error_reason(err)
        raise
    except asyncio.CancelledError:
        call.error = core.CLIENT_GONE
        raise
    finally:
        core.complete(gw, call)


async def _inference(request: web.Request, kind: ApiKind) -> web.StreamResponse:
    """The aiohttp face of ``serve_inference`` (``gateway.server: aiohttp``)."""
    gw = request.app[GATEWAY]
    assert gw.body_limits is not None
    limits = gw.body_limits

    async def read() -> bytes:
        try:
            return await read_body(request, limits)  # 400/408/413/415 at the edge: one decode, UTF-8, depth
        except web.HTTPException as exc:
            raise http_error(exc) from None

    reply = AiohttpReply(request)
    await serve_inference(gw, request, kind, read, principal_of(request), request_trace(request), reply)
    assert reply.response is not None
    return reply.response


def log_edge_rejection(request: web.Request, err: LanternaError, principal: Principal | None) -> None:
    """``auth.ON_REJECT``: the access-log line of a request the auth middleware refused (401, 429)."""
    edge_rejected(request.app[GATEWAY], request, err, principal)


def edge_rejected(gw: Gateway, request: ClientRequest, err: LanternaError, principal: Principal | None) -> None:
    """The access-log line of an inference request refused before its body was read (auth, rate, drain)."""
    kind: ApiKind = "chat" if request.path.endswith("/chat/completions") else "completions"
    core.rejected(gw, err, request.headers, b"", kind, request_id=REQUEST_ID.get() or "", started=gw.clock.now(),
                  method=request.method, path=request.path, client=request.remote, principal=principal)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _inference(request, "completions")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _inference(request, "chat")


def models_answer(gw: Gateway) -> bytes:
    created = int(time.time())
    data = [{"id": c.id, "object": "model", "created": created, "owned_by": c.owned_by, "root": c.id,
             "parent": c.parent, "max_model_len": c.max_model_len} for c in gw.store.model_cards()]
    return _json({"object": "list", "data": data})


def health_answer(gw: Gateway) -> bytes:
    ready = sum(1 for e in gw.store.all() if e.healthy)
    return _json({"status": "ok", "ready_endpoints": ready})


def ready_answer(gw: Gateway) -> tuple[int, bytes, dict[str, str] | None]:
    """Readiness: 503 while no endpoint is ready, and from the start of a graceful shutdown (so a load
    balancer stops sending before the gateway stops admitting). Status, body, extra headers."""
    draining = gw.shutdown is not None and gw.shutdown.draining
    n = 0 if draining else sum(1 for e in gw.store.all() if e.healthy)
    return (200 if n else 503, _json({"status": "ready" if n else "unavailable", "ready_endpoints": n}),
            None if n else {"Retry-After": str(core.NO_ENDPOINT_RETRY_AFTER_S)})


async def list_models(request: web.Request) -> web.Response:
    return web.Response(body=models_answer(request.app[GATEWAY]), content_type="application/json")


async def health(request: web.Request) -> web.Response:
    return web.Response(body=health_answer(request.app[GATEWAY]), content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    status, body, headers = ready_answer(request.app[GATEWAY])
    return web.Response(status=status, content_type="application/json", body=body, headers=headers)


async def metrics(request: web.Request) -> web.Response:
    body, content_type = render_metrics(request.app[GATEWAY])
    resp = web.Response(body=body)
    resp.headers["content-type"] = content_type
    return resp


def render_metrics(gw: Gateway) -> tuple[bytes, str]:
    """Refresh the pool gauges and render the exposition (the main port or ``gateway.metrics_port``)."""
    m, pool = gw.metrics, gw.cfg.gateway.pool_name
    ready = [e for e in gw.store.all() if e.healthy]
    m.pool_ready.labels(pool).set(len(ready))
    n = len(ready) or 1
    m.pool_kv.labels(pool).set(sum(e.metrics.kv_cache_usage for e in ready) / n)
    m.pool_queue.labels(pool).set(sum(e.metrics.num_waiting for e in ready) / n)
    for e in ready:
        m.pod_queue.labels(pool, e.id).set(e.metrics.num_waiting)
    now = gw.clock.now()
    for e in gw.store.all():  # open: the breaker turns requests away, or health checks marked it down
        m.circuit_open.labels(e.id).set(1.0 if not e.healthy or gw.breakers.refuses(e.id, now) else 0.0)
    return generate_latest(m.registry), CONTENT_TYPE_LATEST


async def debug_endpoints(request: web.Request) -> web.Response:
    """Gateway-side load and latest metrics per endpoint (tests and operators read it during streams)."""
    gw = request.app[GATEWAY]
    now = gw.clock.now()
    out = []
    num_blocks = gw.kv_index.num_blocks if gw.kv_index is not None else None
    for e in gw.store.all():
        ld, mt = e.load, e.metrics
        out.append({
            "id": e.id, "address": e.address, "healthy": e.healthy, "models": sorted(e.models),
            "labels": e.labels, "circuit_open": gw.breakers.is_open(e.id),
            "load": {"in_flight_requests": ld.in_flight_requests,
                     "in_flight_prefill_tokens": ld.in_flight_prefill_tokens,
                     "in_flight_decode_seqs": ld.in_flight_decode_seqs,
                     "in_flight_kv_tokens": ld.in_flight_kv_tokens},
            "metrics": {"num_running": mt.num_running, "num_waiting": mt.num_waiting,
                        "kv_cache_usage": mt.kv_cache_usage, "block_size": mt.block_size,
                        "age_s": None if mt.scraped_at == float("-inf") else round(now - mt.scraped_at, 3)},
            "kv_index_blocks": num_blocks(e.id) if num_blocks is not None else None,
        })
    return web.Response(body=_json({"endpoints": out}), content_type="application/json")


def add_routes(app: web.Application, *, debug: bool = True, serve_metrics: bool = True) -> None:
    """Inference, models, probes; ``/metrics`` unless it has its own listener (open unless admin keys are
    configured); ``/debug/*`` only behind an admin key (404 without admin keys unless ``auth.open_admin``)."""
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    if serve_metrics:
        app.router.add_get("/metrics", require_admin(metrics, unconfigured="open"))
    from lanterna.gateway.auth import reload_keys

    app.router.add_post("/admin/auth/reload", require_admin(reload_keys))
    if debug:
        from lanterna.gateway.debug_score import debug_score

        app.router.add_get("/debug/endpoints", require_admin(debug_endpoints))
        app.router.add_post("/debug/score", require_admin(debug_score))
