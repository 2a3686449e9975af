"""Wiring: build the ``Gateway`` state, the aiohttp application and its lifecycle (nothing else lives here).

The state (``gateway/state.py``) holds the routing state and the I/O owners: the upstream keep-alive pools
that carry proxied requests (``gateway/upstream.py``; uncapped: flow control caps concurrency) and one
aiohttp ``ClientSession`` for health checks, scrapes and tokenization. Long-lived pollers (metrics scrapes,
health checks, KV-event subscribers, the scheduler config watcher) are owned by a ``cleanup_ctx`` so they
stop with the app.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import AsyncIterator, Iterable

import aiohttp
from aiohttp import web

from lanterna.clock import MonotonicClock
from lanterna.config.model import LanternaConfig, StaticEndpoint
from lanterna.endpoints.health import HealthChecker
from lanterna.endpoints.scrape import MetricsScraper
from lanterna.endpoints.store import EndpointStore
from lanterna.endpoints.types import Endpoint
from lanterna.gateway.flow_metrics import FlowCollector
from lanterna.gateway.middleware import error_middleware
from lanterna.gateway.precise import make_kv_index, start_precise, stop_precise
from lanterna.gateway.reload import start_reloader
from lanterna.gateway.routes import add_routes
from lanterna.gateway.state import GATEWAY, PREWARM, Gateway
from lanterna.gateway.transport import UpstreamTransport
from lanterna.gateway.upstream import Upstreams
from lanterna.kvindex.index import KVIndex
from lanterna.obs.metrics import GatewayMetrics
from lanterna.routing.flow import FlowConfig, FlowController
from lanterna.routing.retries import Breakers
from lanterna.scheduler import Scheduler, SchedulerServices, default_epp_config, load_epp_config

log = logging.getLogger(__name__)

__all__ = ["GATEWAY", "Gateway", "build_app", "create_gateway", "endpoint_from_spec", "serve"]


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
                   kv_index: KVIndex | None = None, transport: UpstreamTransport | None = None) -> Gateway:
    """Build the state (raises ConfigError for a bad scheduler config); nothing runs until the app starts.

    ``transport``: carry proxied requests over this instead of real keep-alive pools (socket-free tests)."""
    rng = random.Random(cfg.gateway.seed)
    clock = MonotonicClock()
    if scheduler is None:
        scheduler, kv_index = _build_scheduler(cfg, rng, clock)
    gw = Gateway(cfg=cfg, store=EndpointStore(), scheduler=scheduler, metrics=GatewayMetrics(cfg.gateway.pool_name),
                 breakers=Breakers(cfg.gateway.circuit_breaker.failure_threshold, cfg.gateway.circuit_breaker.open_s),
                 rng=rng, clock=clock, kv_index=kv_index, upstreams=transport)
    fc = cfg.flowcontrol
    if fc.enabled:
        gw.flow = FlowController(FlowConfig(max_concurrency=fc.max_concurrency, max_queue_len=fc.max_queue_len,
                                            queue_ttl_s=fc.queue_ttl_s, max_queue_len_per_flow=fc.max_queue_len_per_flow,
                                            retry_after_s=fc.retry_after_s), saturated=gw.pool_saturated)
        gw.metrics.registry.register(FlowCollector(gw.flow.stats, gw.pool_saturated, cfg.gateway.pool_name))
    for spec in cfg.endpoints.static:
        gw.store.add(endpoint_from_spec(spec))
    for ep in endpoints:
        gw.store.add(ep)
    return gw


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    gw = app[GATEWAY]
    t = gw.cfg.gateway.timeouts
    ecfg = gw.cfg.endpoints
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60, family=socket.AF_INET)
    session = gw.session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                 skip_auto_headers=("User-Agent",))
    upstreams = gw.upstreams
    if upstreams is None:
        upstreams = gw.upstreams = Upstreams(connect_s=t.connect_s, idle_s=max(t.stream_idle_s, t.first_byte_s))
    scraper = gw.scraper = MetricsScraper(session, ecfg.scrape_interval_s, ecfg.scrape_timeout_s,
                                          on_scrape=gw.refresh_saturation)
    health = gw.health = HealthChecker(session, gw.store, interval_s=ecfg.health_interval_s,
                                       timeout_s=ecfg.scrape_timeout_s, unhealthy_after=ecfg.unhealthy_after,
                                       on_change=gw.health_changed)
    # A first health + models round before serving, so /v1/models and routing work from the first request.
    await asyncio.gather(*(health.check_once(ep) for ep in gw.store.all()), return_exceptions=True)
    await asyncio.gather(*(upstreams.prewarm(ep.address, PREWARM) for ep in gw.store.all() if ep.healthy))
    for ep in gw.store.all():
        scraper.watch(ep)
        health.watch(ep, checked=True)
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
        upstreams.close()
        await session.close()


def build_app(gw: Gateway) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=gw.cfg.gateway.max_body_bytes)
    app[GATEWAY] = gw
    add_routes(app, debug=gw.cfg.gateway.debug_endpoints)
    app.cleanup_ctx.append(_lifecycle)
    if gw.cfg.gateway.tracing:
        from lanterna.gateway.tracing import enable_tracing

        enable_tracing(app)
    return app


async def serve(app: web.Application, host: str, port: int, *, reuse_port: bool = False) -> web.AppRunner:
    """Start serving; the caller awaits shutdown and calls ``runner.cleanup()``."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True, reuse_port=reuse_port)
    await site.start()
    return runner
