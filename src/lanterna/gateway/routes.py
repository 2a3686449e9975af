"""HTTP routes: the two inference endpoints, ``/v1/models``, ``/health``, ``/metrics``, ``/debug/*``.

Inference path, per request (the hot path; no per-request allocations we can avoid), each step the routing
core's (``lanterna.routing.core``) except moving bytes (``dispatch``):

    prepare (parse, resolve model, candidates) -> admit (flow control, may queue) -> tokenize (precise only)
    -> schedule (pick + attempt order) -> attempts until one yields first bytes -> relay or answer
    -> complete (once, in ``finally``: response_complete + per-request metrics)

``/health`` is liveness (200 while the process serves); ``/ready`` is readiness (503 while no endpoint is
ready for any model).
"""

from __future__ import annotations

import logging
import time

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lanterna.errors import LanternaError
from lanterna.gateway.dispatch import dispatch
from lanterna.gateway.state import GATEWAY
from lanterna.obs.logs import REQUEST_ID
from lanterna.routing import core
from lanterna.scheduler.framework.types import ApiKind

log = logging.getLogger(__name__)


async def _inference(request: web.Request, kind: ApiKind) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    call = core.prepare(gw, request.headers, await request.read(), kind, request_id=REQUEST_ID.get() or "")
    try:
        async with core.admit(gw, call):
            await core.tokenize(gw, call)
            return await dispatch(gw, request, call)
    except LanternaError as err:
        call.status, call.error = err.status, err.error_type
        raise
    finally:
        core.complete(gw, call)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _inference(request, "completions")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _inference(request, "chat")


async def list_models(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    created = int(time.time())
    data = [{"id": c.id, "object": "model", "created": created, "owned_by": c.owned_by, "root": c.id,
             "parent": c.parent, "max_model_len": c.max_model_len} for c in gw.store.model_cards()]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")


async def health(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    ready = sum(1 for e in gw.store.all() if e.healthy)
    return web.Response(body=orjson.dumps({"status": "ok", "ready_endpoints": ready}),
                        content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    n = sum(1 for e in gw.store.all() if e.healthy)
    return web.Response(status=200 if n else 503, content_type="application/json",
                        body=orjson.dumps({"status": "ready" if n else "unavailable", "ready_endpoints": n}),
                        headers=None if n else {"Retry-After": str(core.NO_ENDPOINT_RETRY_AFTER_S)})


async def metrics(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
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
    resp = web.Response(body=generate_latest(m.registry))
    resp.headers["content-type"] = CONTENT_TYPE_LATEST
    return resp


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
    return web.Response(body=orjson.dumps({"endpoints": out}), content_type="application/json")


def add_routes(app: web.Application, *, debug: bool = True) -> None:
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    if debug:
        from lanterna.gateway.debug_score import debug_score

        app.router.add_get("/debug/endpoints", debug_endpoints)
        app.router.add_post("/debug/score", debug_score)

