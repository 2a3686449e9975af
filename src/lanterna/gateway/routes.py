"""HTTP routes: the two inference endpoints, ``/v1/models``, ``/health``, ``/metrics``, ``/debug/*``.

Inference path, per request (the hot path; no per-request allocations we can avoid):

    parse routing fields -> resolve model (rewrite / split / adapter) -> flow.admit (may queue)
    -> scheduler.schedule -> pre_request -> attempts in order until one yields first bytes
    -> relay (stream) or answer (non-stream) -> release load (finally) -> response_complete + metrics
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lanterna.endpoints.types import Endpoint
from lanterna.errors import LanternaError, ModelNotFound, NoCapacity, ValidationFailed
from lanterna.gateway.app import GATEWAY, Gateway
from lanterna.gateway.dispatch import dispatch
from lanterna.gateway.flow import FlowRequest
from lanterna.gateway.precise import tokenize
from lanterna.gateway.request import (
    HDR_FAIRNESS,
    HDR_MODEL_REWRITE,
    HDR_OBJECTIVE,
    HDR_SESSION,
    RoutingFields,
    first_header,
    parse_body,
    priority_for,
    prompt_text,
    prompt_token_ids,
    rewrite_body,
)
from lanterna.obs.logs import REQUEST_ID
from lanterna.scheduler.framework.types import SchedRequest

log = logging.getLogger(__name__)


def _resolve_model(gw: Gateway, requested: str | None, headers: Any) -> str:
    """Requested name -> served name: header rewrite, then config rewrite, then weighted split."""
    gcfg = gw.cfg.gateway
    if requested is None:
        bases = [c.id for c in gw.store.model_cards() if c.parent is None]
        if len(bases) != 1:
            raise ValidationFailed("1 validation error: model: Field required", param="body.model")
        return bases[0]
    target = headers.get(HDR_MODEL_REWRITE) or gcfg.model_rewrites.get(requested, requested)
    split = gcfg.traffic_split.get(target)
    if split:
        total = sum(t.weight for t in split)
        if total > 0:
            x = gw.rng.random() * total
            for t in split:
                x -= t.weight
                if x < 0:
                    return t.model
            return split[-1].model
    return target


@dataclass(slots=True)
class Prepared:
    """A parsed inference request, resolved to its served model, candidates and scheduler request."""

    fields: RoutingFields
    requested: str | None
    target: str
    candidates: list[Endpoint]
    body: bytes
    sreq: SchedRequest


async def prepare(gw: Gateway, headers: Any, body: bytes, kind: str, model: str | None = None) -> Prepared:
    """Parse, resolve the model, find candidates and build the ``SchedRequest`` (tokenized when precise).

    Shared by the inference routes and ``/debug/score`` so both score exactly the same request."""
    fields = parse_body(body, kind)
    requested = model or fields.model
    target = _resolve_model(gw, requested, headers)
    candidates = gw.store.candidates(target)
    if not candidates:
        known = gw.store.known_models()
        if target not in known:
            raise ModelNotFound(f"The model `{target}` does not exist. Valid aliases: {', '.join(known) or '(none)'}.",
                                param="model")
        raise NoCapacity(f"no healthy endpoint serves model {target!r}")
    if target != fields.model:
        body = rewrite_body(body, model=target)
    parent = gw.store.base_model_of(target)
    sreq = SchedRequest(
        request_id="",
        model=parent or target,
        prompt_text=prompt_text(fields, kind),
        kind=kind,  # type: ignore[arg-type]
        headers=headers,
        lora=target if parent else None,
        priority=priority_for(first_header(headers, HDR_OBJECTIVE), gw.cfg.gateway.objectives),
        fairness_id=first_header(headers, HDR_FAIRNESS) or "default",
        session_token=headers.get(HDR_SESSION),
        max_tokens=fields.max_tokens if fields.max_tokens is not None else fields.max_completion_tokens,
        token_ids=prompt_token_ids(fields, kind),
        cache_salt=fields.cache_salt,
    )
    sreq.request_id = REQUEST_ID.get() or ""
    if gw.tokenizer is not None:
        await tokenize(gw, sreq, fields)
    return Prepared(fields, requested, target, candidates, body, sreq)


async def _inference(request: web.Request, kind: str) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    started = time.perf_counter()
    p = await prepare(gw, request.headers, await request.read(), kind)
    fields, requested, target, candidates, body, sreq = p.fields, p.requested, p.target, p.candidates, p.body, p.sreq
    # model_name is the requested name only when it is one we know (bounded label cardinality).
    gcfg = gw.cfg.gateway
    named = requested if requested in gcfg.model_rewrites or requested in gcfg.traffic_split else target
    labels = (named, target)
    m = gw.metrics
    obj = m.objective(named, target)
    obj.request_total.inc()
    running = obj.running
    running.inc()
    try:
        flow = gw.flow
        if flow is not None:
            admission = flow.admit(FlowRequest(sreq.request_id, sreq.fairness_id, sreq.priority, target))  # type: ignore[attr-defined]
        else:
            admission = nullcontext()
        async with admission:
            return await dispatch(gw, request, sreq, body, bool(fields.stream), candidates, labels, started)
    except LanternaError as err:
        m.request_error_total.labels(*labels, str(err.status)).inc()
        raise
    finally:
        running.dec()


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
    for e in gw.store.all():
        m.circuit_open.labels(e.id).set(1.0 if gw.breakers.is_open(e.id) else 0.0)
    resp = web.Response(body=generate_latest(m.registry))
    resp.headers["content-type"] = CONTENT_TYPE_LATEST
    return resp


async def debug_endpoints(request: web.Request) -> web.Response:
    """Gateway-side load and latest metrics per endpoint (tests and operators read it during streams)."""
    gw = request.app[GATEWAY]
    now = gw.clock.now()
    out = []
    num_blocks = getattr(gw.kv_index, "num_blocks", None)
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
    app.router.add_get("/metrics", metrics)
    if debug:
        from lanterna.gateway.debug_score import debug_score

        app.router.add_get("/debug/endpoints", debug_endpoints)
        app.router.add_post("/debug/score", debug_score)

