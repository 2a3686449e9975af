"""Wiring: build the ``Gateway`` state, the aiohttp application and its lifecycle (nothing else lives here).

The state (``gateway/state.py``) holds the routing state and the I/O owners: the upstream keep-alive pools
that carry proxied requests (``gateway/upstream.py``; uncapped: flow control caps concurrency) and one
aiohttp ``ClientSession`` for health checks, scrapes and tokenization. Long-lived pollers (metrics scrapes,
health checks, KV-event subscribers, the scheduler config watcher) run inside ``running(gw)``, which the app's
``cleanup_ctx`` enters (so they stop with the app) and the ext_proc picker (``lanterna.epp``) enters too.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from lanterna.clock import MonotonicClock
from lanterna.config.model import LanternaConfig, StaticEndpoint
from lanterna.endpoints.health import HealthChecker
from lanterna.endpoints.scrape import MetricsScraper
from lanterna.endpoints.store import EndpointStore
from lanterna.endpoints.types import Endpoint
from lanterna.gateway.auth import AUTH, ON_REJECT, EdgeAuth, auth_reload_ctx
from lanterna.gateway.edge import BodyLimits
from lanterna.gateway.flow_metrics import FlowCollector
from lanterna.gateway.front import edge_middleware
from lanterna.gateway.precise import make_kv_index, start_precise, stop_precise
from lanterna.gateway.reload import start_reloader, timed
from lanterna.gateway.routes import add_routes, log_edge_rejection, render_metrics
from lanterna.gateway.server import (
    RESPONSE_HEADERS,
    SHUTDOWN,
    Serving,
    Shutdown,
    build_metrics_app,
    serve_edge,
)
from lanterna.gateway.state import GATEWAY, PREWARM, Gateway
from lanterna.gateway.transport import UpstreamTransport
from lanterna.gateway.upstream import Upstreams
from lanterna.kvindex.index import KVIndex
from lanterna.obs.access import AccessLog
from lanterna.obs.metrics import GatewayMetrics
from lanterna.obs.tracing import Tracer
from lanterna.routing.flow import FlowConfig, FlowController
from lanterna.routing.retries import Breakers
from lanterna.scheduler import Scheduler, SchedulerServices, default_epp_config, load_epp_config

log = logging.getLogger(__name__)

__all__ = ["GATEWAY", "Gateway", "build_app", "build_metrics_only_app", "create_gateway", "endpoint_from_spec",
           "running", "serve"]


def endpoint_from_spec(spec: StaticEndpoint) -> Endpoint:
    return Endpoint(id=spec.address, address=spec.address, labels=dict(spec.labels), models=frozenset(spec.models),
                    kv_events_endpoint=spec.kv_events)


def _build_scheduler(cfg: LanternaConfig, rng: random.Random, clock: MonotonicClock) -> tuple[Scheduler, KVIndex | None]:
    """The scheduler and, when its config uses the precise scorer, the KV-event index it reads."""
    epp = load_epp_config(cfg.scheduler) if cfg.scheduler else default_epp_config()
    kv_index = make_kv_index(cfg, epp)
    sched = Scheduler.from_config(epp, rng=rng, clock=clock, services=SchedulerServices(kv_index=kv_index))
    return sched, kv_index


def create_gateway(cfg: LanternaConfig, endpoints: Iterable[Endpoint] = (), *, scheduler: Scheduler | None = None,
                   kv_index: KVIndex | None = None, transport: UpstreamTransport | None = None,
                   access_log: AccessLog | None = None, tracer: Tracer | None = None) -> Gateway:
    """Build the state (raises ConfigError for a bad scheduler config); nothing runs until the app starts.

    ``transport``: carry proxied requests over this instead of real keep-alive pools (socket-free tests).
    ``access_log`` / ``tracer``: instead of the ones ``gateway.access_log`` / ``gateway.tracing`` configure
    (the ``lanterna.access`` logger; the global OpenTelemetry provider)."""
    rng = random.Random(cfg.gateway.seed)
    clock = MonotonicClock()
    if scheduler is None:
        scheduler, kv_index = _build_scheduler(cfg, rng, clock)
    gw = Gateway(cfg=cfg, store=EndpointStore(), scheduler=scheduler, metrics=GatewayMetrics(cfg.gateway.pool_name),
                 breakers=Breakers(cfg.gateway.circuit_breaker.failure_threshold, cfg.gateway.circuit_breaker.open_s),
                 rng=rng, clock=clock, kv_index=kv_index, upstreams=transport)
    lim = cfg.gateway.limits
    gw.body_limits = BodyLimits(cfg.gateway.max_body_bytes, lim.body_timeout_s, lim.max_json_depth)
    timed(gw, gw.scheduler)
    mode = cfg.gateway.access_log
    gw.access_log = access_log or (AccessLog(mode) if mode != "off" else None)
    gw.tracer = tracer or (Tracer(enabled=True) if cfg.gateway.tracing else None)
    fc = cfg.flowcontrol
    if fc.enabled:
        gw.flow = FlowController(FlowConfig(max_concurrency=fc.max_concurrency, max_queue_len=fc.max_queue_len,
                                            queue_ttl_s=fc.queue_ttl_s, max_queue_len_per_flow=fc.max_queue_len_per_flow,
                                            retry_after_s=fc.retry_after_s, ordering=fc.ordering),
                                 saturated=gw.pool_saturated)
        gw.metrics.registry.register(FlowCollector(gw.flow.stats, gw.pool_saturated, cfg.gateway.pool_name))
    for spec in cfg.endpoints.static:
        gw.store.add(endpoint_from_spec(spec))
    for ep in endpoints:
        gw.store.add(ep)
    return gw


def _chain(first: Callable[[Endpoint, bool], None], then: Callable[[Endpoint, bool], None]
           ) -> Callable[[Endpoint, bool], None]:
    def both(ep: Endpoint, healthy: bool) -> None:
        first(ep, healthy)
        then(ep, healthy)

    return both


@asynccontextmanager
async def running(gw: Gateway, *, proxy: bool = True,
                  on_health_change: Callable[[Endpoint, bool], None] | None = None) -> AsyncIterator[None]:
    """Run the state's pollers (health checks, scrapes, KV-event subscriptions, the config reloader) for the
    block's duration. ``proxy=False`` (the ext_proc picker: Envoy moves the bytes) opens no upstream pools;
    ``on_health_change`` is told of each endpoint health transition after the gateway's own handling."""
    t = gw.cfg.gateway.timeouts
    ecfg = gw.cfg.endpoints
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60, family=socket.AF_INET)
    session = gw.session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                 skip_auto_headers=("User-Agent",))
    upstreams = gw.upstreams
    fetch = None  # scrapes over the lean pools when they are real sockets (a test's transport has no GET)
    if upstreams is None and proxy:
        real = Upstreams(connect_s=t.connect_s, idle_s=max(t.stream_idle_s, t.first_byte_s))
        upstreams = gw.upstreams = real
        fetch = real.get
    on_change = gw.health_changed if on_health_change is None else _chain(gw.health_changed, on_health_change)
    scraper = gw.scraper = MetricsScraper(session, ecfg.scrape_interval_s, ecfg.scrape_timeout_s,
                                          on_scrape=gw.refresh_saturation, fetch=fetch)
    health = gw.health = HealthChecker(session, gw.store, interval_s=ecfg.health_interval_s,
                                       timeout_s=ecfg.scrape_timeout_s, unhealthy_after=ecfg.unhealthy_after,
                                       on_change=on_change)
    # A first health + models round before serving, so /v1/models and routing work from the first request.
    await asyncio.gather(*(health.check_once(ep) for ep in gw.store.all()), return_exceptions=True)
    if upstreams is not None:
        await asyncio.gather(*(upstreams.prewarm(ep.address, PREWARM) for ep in gw.store.all() if ep.healthy))
    for ep in gw.store.all():
        scraper.watch(ep)
        health.watch(ep, checked=True)
    gw.refresh_hold()  # scale from zero: hold arrivals while no endpoint is ready
    await start_precise(gw)
    gw.reloader = start_reloader(gw)
    log.info("gateway_started", extra={"endpoints": [e.id for e in gw.store.all()]})
    try:
        yield
    finally:
        if gw.reloader is not None:
            await gw.reloader.close()
        await scraper.close()
        await health.close()
        await stop_precise(gw)
        if gw.flow is not None:
            gw.flow.close()
        if upstreams is not None:
            upstreams.close()
        await session.close()


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    async with running(app[GATEWAY]):
        yield


def build_app(gw: Gateway) -> web.Application:
    """The client-facing app. One middleware (``gateway.front``), in this order: errors -> OpenAI shape; drain
    (refuse new requests while shutting down); authentication + request-rate charge for ``/v1/*`` (before the
    body is read).
    Raises ConfigError for a bad auth config (no keys, unreadable upstream credential)."""
    gcfg = gw.cfg.gateway
    gw.auth = EdgeAuth.from_config(gw.cfg.auth)
    gw.shutdown = Shutdown(gcfg.limits.shutdown_retry_after_s)
    app = web.Application(middlewares=[edge_middleware(gw.shutdown, gw.auth)],
                          client_max_size=gcfg.max_body_bytes)
    app[GATEWAY] = gw
    app[AUTH] = gw.auth
    app[ON_REJECT] = log_edge_rejection
    app[SHUTDOWN] = gw.shutdown
    add_routes(app, debug=gcfg.debug_endpoints, serve_metrics=gcfg.metrics_port is None)
    app.cleanup_ctx.append(_lifecycle)
    app.cleanup_ctx.append(auth_reload_ctx)
    if gw.tracer is not None:
        from lanterna.gateway.tracing import enable_tracing

        enable_tracing(app, gw.tracer)
    return app


def build_metrics_only_app(gw: Gateway) -> web.Application:
    """``gateway.metrics_port``: /metrics on its own listener (kept off the client-facing port)."""
    app = build_metrics_app(lambda: render_metrics(gw))
    app[GATEWAY] = gw
    return app


async def serve(app: web.Application, host: str, port: int, *, reuse_port: bool = False) -> Serving:
    """Start serving with the edge limits (header/body deadlines, header caps answered as OpenAI-shaped 431);
    the caller awaits shutdown and calls ``cleanup()``. The client-facing app is served by the lean front
    (``gateway/lean.py``) unless ``gateway.http_server: aiohttp``; other apps (the metrics listener) by aiohttp."""
    gw = app[GATEWAY]
    if SHUTDOWN in app and gw.cfg.gateway.http_server == "lean":
        from lanterna.gateway.lean import serve_lean

        return await serve_lean(app, gw, host, port, reuse_port=reuse_port, extra_headers=app.get(RESPONSE_HEADERS))
    return await serve_edge(app, host, port, gw.cfg.gateway.limits, reuse_port=reuse_port)
