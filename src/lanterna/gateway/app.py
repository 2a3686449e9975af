"""Wiring: the ``Gateway`` state object, the aiohttp application and its lifecycle.

One ``Gateway`` per process holds the endpoint store, scheduler, flow controller, breakers, metrics, the
upstream keep-alive pools that carry proxied requests (``gateway/upstream.py``; uncapped: flow control
caps concurrency) and one aiohttp ``ClientSession`` for health checks, scrapes and tokenization.
Long-lived pollers (metrics scrapes, health checks, KV-event subscribers, the scheduler config watcher)
are owned by a ``cleanup_ctx`` so they stop with the app. Pool saturation is computed after each scrape
and cached: flow control reads it on every admission.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from lanterna.clock import MonotonicClock
from lanterna.config.model import LanternaConfig, StaticEndpoint
from lanterna.endpoints.health import HealthChecker
from lanterna.endpoints.scrape import MetricsScraper
from lanterna.endpoints.store import EndpointStore
from lanterna.endpoints.types import Endpoint
from lanterna.gateway.retries import Breakers
from lanterna.gateway.upstream import Upstreams
from lanterna.obs.metrics import GatewayMetrics

log = logging.getLogger(__name__)

GATEWAY: web.AppKey[Gateway] = web.AppKey("lanterna_gateway")

# WVA saturation thresholds (PROTOCOLS.md section 7), used to decide when flow control queues.
_SAT_KV = 0.80
_SAT_WAITING = 5
_PREWARM = 16  # keep-alive connections opened per endpoint at startup


def endpoint_from_spec(spec: StaticEndpoint) -> Endpoint:
    return Endpoint(id=spec.address, address=spec.address, labels=dict(spec.labels), models=frozenset(spec.models),
                    kv_events_endpoint=spec.kv_events)


@dataclass(slots=True)
class Gateway:
    cfg: LanternaConfig
    store: EndpointStore
    scheduler: object  # lanterna.scheduler.Scheduler (typed loosely: the gateway also runs a fallback)
    flow: object | None
    metrics: GatewayMetrics
    breakers: Breakers
    rng: random.Random
    clock: MonotonicClock = field(default_factory=MonotonicClock)
    session: aiohttp.ClientSession | None = None
    upstreams: Upstreams | None = None  # keep-alive pools for proxied requests (aiohttp serves the rest)
    scraper: MetricsScraper | None = None
    health: HealthChecker | None = None
    kv_index: object | None = None
    kv_events: object | None = None
    tokenizer: object | None = None
    reloader: object | None = None  # SchedulerReloader when the scheduler config is a watched file

    saturated: bool = False  # cached by refresh_saturation(); flow control reads it on every admission

    def pool_saturated(self) -> bool:
        """The cached pool saturation flag (O(1): called on every admission)."""
        return self.saturated

    def refresh_saturation(self, _ep: Endpoint | None = None) -> None:
        """Recompute the flag after a scrape; wake queued requests when it clears."""
        was, self.saturated = self.saturated, self.compute_saturation()
        if was and not self.saturated and self.flow is not None:
            self.flow.poke()  # type: ignore[attr-defined]

    def compute_saturation(self) -> bool:
        """True when every ready endpoint is saturated (KV >= 80% or >= 5 waiting), from fresh metrics."""
        now = self.clock.now()
        stale = self.cfg.endpoints.stale_after_s
        seen = False
        for ep in self.store.all():
            if not ep.healthy:
                continue
            m = ep.metrics
            if now - m.scraped_at > stale:
                return False  # no fresh view: do not hold requests back on guesses
            seen = True
            if m.kv_cache_usage < _SAT_KV and m.num_waiting < _SAT_WAITING:
                return False
        return seen

    async def add_endpoint(self, ep: Endpoint) -> None:
        """Start routing to an endpoint found after startup: one health + models round (so its served models,
        hence its KV-event model, are known), then scrapes, health checks and its KV-event subscription."""
        self.store.add(ep)
        if self.health is not None:
            await self.health.check_once(ep)
            self.health.watch(ep, checked=True)
        if self.upstreams is not None and ep.healthy:
            await self.upstreams.prewarm(ep.address, _PREWARM)
        if self.scraper is not None:
            self.scraper.watch(ep)
        if self.kv_events is not None:
            from lanterna.gateway.precise import subscribe

            await subscribe(self, ep)

    async def remove_endpoint(self, endpoint_id: str) -> None:
        """Stop routing to an endpoint; its KV-event subscription ends and its index entries are cleared."""
        ep = self.store.remove(endpoint_id)
        if ep is not None and self.upstreams is not None:
            self.upstreams.forget(ep.address)
        self.breakers.forget(endpoint_id)
        for owner in (self.scraper, self.health):
            if owner is not None:
                owner.unwatch(endpoint_id)
        removed = getattr(self.scheduler, "endpoint_removed", None)
        if callable(removed):
            removed(endpoint_id)  # plugins drop its per-endpoint state
        if self.kv_events is not None:
            await self.kv_events.remove_endpoint(endpoint_id)  # type: ignore[attr-defined]


def _build_scheduler(cfg: LanternaConfig, rng: random.Random, clock: MonotonicClock) -> tuple[object, object | None]:
    """The scheduler and, when its config uses the precise scorer, the KV-event index it reads."""
    from lanterna.gateway.precise import make_kv_index
    from lanterna.scheduler import Scheduler, SchedulerServices, default_epp_config, load_epp_config

    epp = load_epp_config(cfg.scheduler) if cfg.scheduler else default_epp_config()
    kv_index = make_kv_index(cfg, epp)
    sched = Scheduler.from_config(epp, rng=rng, clock=clock, services=SchedulerServices(kv_index=kv_index))  # type: ignore[arg-type]
    return sched, kv_index


def _build_flow(cfg: LanternaConfig, saturated: object) -> object | None:
    if not cfg.flowcontrol.enabled:
        return None
    from lanterna.gateway.flow import FlowConfig, FlowController

    fc = cfg.flowcontrol
    return FlowController(FlowConfig(max_concurrency=fc.max_concurrency, max_queue_len=fc.max_queue_len,
                                     queue_ttl_s=fc.queue_ttl_s, max_queue_len_per_flow=fc.max_queue_len_per_flow,
                                     retry_after_s=fc.retry_after_s), saturated=saturated)  # type: ignore[arg-type]


def create_gateway(cfg: LanternaConfig, endpoints: Iterable[Endpoint] = (), *, scheduler: object | None = None,
                   kv_index: object | None = None) -> Gateway:
    """Build the state (raises ConfigError for a bad scheduler config); nothing runs until the app starts."""
    rng = random.Random(cfg.gateway.seed)
    clock = MonotonicClock()
    if scheduler is None:
        scheduler, kv_index = _build_scheduler(cfg, rng, clock)
    gw = Gateway(
        cfg=cfg,
        store=EndpointStore(),
        scheduler=scheduler,
        flow=None,
        metrics=GatewayMetrics(cfg.gateway.pool_name),
        breakers=Breakers(cfg.gateway.circuit_breaker.failure_threshold, cfg.gateway.circuit_breaker.open_s),
        rng=rng,
        clock=clock,
        kv_index=kv_index,
    )
    gw.flow = _build_flow(cfg, gw.pool_saturated)
    if gw.flow is not None:
        from lanterna.gateway.flow_metrics import FlowCollector

        gw.metrics.registry.register(FlowCollector(gw.flow.stats, gw.pool_saturated, cfg.gateway.pool_name))  # type: ignore[attr-defined]
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
    gw.session = aiohttp.ClientSession(connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",))
    gw.upstreams = Upstreams(connect_s=t.connect_s, idle_s=max(t.stream_idle_s, t.first_byte_s))
    gw.scraper = MetricsScraper(gw.session, ecfg.scrape_interval_s, ecfg.scrape_timeout_s,
                                on_scrape=gw.refresh_saturation)
    gw.health = HealthChecker(gw.session, gw.store, interval_s=ecfg.health_interval_s,
                              timeout_s=ecfg.scrape_timeout_s, unhealthy_after=ecfg.unhealthy_after)
    from lanterna.gateway.precise import start_precise, stop_precise

    # A first health + models round before serving, so /v1/models and routing work from the first request.
    await asyncio.gather(*(gw.health.check_once(ep) for ep in gw.store.all()), return_exceptions=True)
    await asyncio.gather(*(gw.upstreams.prewarm(ep.address, _PREWARM) for ep in gw.store.all() if ep.healthy))
    for ep in gw.store.all():
        gw.scraper.watch(ep)
        gw.health.watch(ep, checked=True)
    await start_precise(gw)
    from lanterna.gateway.reload import start_reloader

    gw.reloader = start_reloader(gw)
    log.info("gateway_started", extra={"endpoints": [e.id for e in gw.store.all()]})
    try:
        yield
    finally:
        if gw.reloader is not None:
            await gw.reloader.close()  # type: ignore[attr-defined]
        await gw.scraper.close()
        await gw.health.close()
        await stop_precise(gw)
        if gw.flow is not None:
            gw.flow.close()  # type: ignore[attr-defined]
        gw.upstreams.close()
        await gw.session.close()


def build_app(gw: Gateway) -> web.Application:
    from lanterna.gateway.middleware import error_middleware
    from lanterna.gateway.routes import add_routes

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
