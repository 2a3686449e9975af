"""``Gateway``: the HTTP gateway's state, the routing state plus the I/O owners around it.

One per process: the routing state (``lanterna.routing.state``: endpoint store, scheduler, flow control,
breakers, metrics, KV index, tokenizer) and what moves bytes or polls (the upstream transport, the aiohttp
session for health checks, scrapes and tokenization, the pollers, KV-event subscribers, the scheduler config
reloader). Typed, and importing no other gateway module that imports it back: routes, dispatch, precise,
reload and debug_score all depend on this module, never on ``app.py``.

Attempts in flight register their first-byte deadline per endpoint, so a health checker that declares an
endpoint unhealthy can expire them at once and the request fails over while no byte reached the client.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from lanterna.endpoints.health import HealthChecker
from lanterna.endpoints.scrape import MetricsScraper
from lanterna.endpoints.types import Endpoint
from lanterna.gateway.auth import EdgeAuth
from lanterna.gateway.edge import BodyLimits
from lanterna.gateway.reload import SchedulerReloader
from lanterna.gateway.server import Shutdown
from lanterna.gateway.transport import UpstreamTransport
from lanterna.kvindex.metrics import KVIndexCollector
from lanterna.kvindex.zmq_source import KVEventSubscriberManager
from lanterna.obs.tracing import Tracer
from lanterna.routing.state import RoutingState

log = logging.getLogger(__name__)

PREWARM = 16  # keep-alive connections opened per endpoint at startup


@dataclass(slots=True)
class Gateway(RoutingState):
    session: aiohttp.ClientSession | None = None
    upstreams: UpstreamTransport | None = None  # keep-alive pools for proxied requests (aiohttp serves the rest)
    scraper: MetricsScraper | None = None
    health: HealthChecker | None = None
    kv_events: KVEventSubscriberManager | None = None
    kv_collector: KVIndexCollector | None = None  # registered on metrics.registry while precise routing runs
    reloader: SchedulerReloader | None = None  # when the scheduler config is a watched file
    auth: EdgeAuth | None = None  # API keys, rate limits, admin keys (set by build_app)
    shutdown: Shutdown | None = None  # graceful drain: readiness off, refuse new requests, wait for in-flight
    body_limits: BodyLimits | None = None  # request body cap, read deadline, JSON depth (set by create_gateway)
    tracer: Tracer | None = None  # records spans (``gateway.tracing``, or a test's provider); None: pass-through
    # endpoint id -> first-byte deadlines of attempts waiting on it (expired when it turns unhealthy)
    waiting_attempts: dict[str, set[asyncio.Timeout]] = field(default_factory=dict)

    def health_changed(self, ep: Endpoint, healthy: bool) -> None:
        """Health checker transition: fail over attempts still waiting on a dead endpoint; on recovery close its
        circuit (the health check is the probe)."""
        self.refresh_hold()
        if healthy:
            self.breakers.reset(ep.id)
            return
        scopes = self.waiting_attempts.get(ep.id)
        if scopes:
            now = asyncio.get_running_loop().time()
            for scope in list(scopes):
                if not scope.expired():
                    scope.reschedule(now)

    async def subscribe(self, ep: Endpoint) -> None:
        """Subscribe to ``ep``'s KV-event publisher (precise routing): its own address, else the shared socket
        (``kvindex.zmq_endpoint``: its messages are told apart by topic); no-op without either."""
        kv = self.kv_events
        bases = sorted(m for m in ep.models if self.store.base_model_of(m) is None)
        if kv is None or not bases or not (ep.kv_events_endpoint or kv.shared_address):
            return
        k = self.cfg.kvindex
        replay = k.replay_endpoints.get(ep.address) or k.replay_endpoints.get(ep.id)
        storage = k.storage.get(ep.address) or k.storage.get(ep.id)
        await kv.add_endpoint(ep.id, ep.kv_events_endpoint, bases[0], replay, storage=storage)
        if ep.metrics.block_size and self.kv_index is not None:
            self.kv_index.set_block_size(bases[0], ep.metrics.block_size)

    async def add_endpoint(self, ep: Endpoint) -> None:
        """Start routing to an endpoint found after startup: one health + models round (so its served models,
        hence its KV-event model, are known), then scrapes, health checks and its KV-event subscription."""
        self.store.add(ep)
        if self.health is not None:
            await self.health.check_once(ep)
            self.health.watch(ep, checked=True)
        if self.upstreams is not None and ep.healthy:
            await self.upstreams.prewarm(ep.address, PREWARM)
        if self.scraper is not None:
            self.scraper.watch(ep)
        await self.subscribe(ep)
        self.refresh_hold()  # scale from zero: the first ready replica releases the held requests

    async def remove_endpoint(self, endpoint_id: str) -> None:
        """Stop routing to an endpoint; its KV-event subscription ends and its index entries are cleared."""
        await self._forget(endpoint_id, self.store.remove(endpoint_id))

    async def drain_endpoint(self, endpoint_id: str, timeout_s: float = 30.0, poll_s: float = 0.05) -> int:
        """Scale-down: stop routing new requests to the endpoint, wait (up to ``timeout_s``) for the requests it
        is serving to finish, then remove it. Returns how many were still running at the deadline (0: drained).
        Polls the endpoint's load (no completion event exists per endpoint; this is off the hot path)."""
        ep = self.store.remove(endpoint_id)
        self.refresh_hold()
        if ep is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            # NOTE: polled on purpose: a per-endpoint completion event would cost every request on the hot path
            while ep.load.in_flight_requests > 0 and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(poll_s)
        await self._forget(endpoint_id, ep)
        return ep.load.in_flight_requests if ep is not None else 0

    async def _forget(self, endpoint_id: str, ep: Endpoint | None) -> None:
        self.refresh_hold()
        if ep is not None and self.upstreams is not None:
            self.upstreams.forget(ep.address)
        self.breakers.forget(endpoint_id)
        if self.scraper is not None:
            self.scraper.unwatch(endpoint_id)
        if self.health is not None:
            self.health.unwatch(endpoint_id)
        self.scheduler.endpoint_removed(endpoint_id)  # plugins drop its per-endpoint state
        if self.kv_events is not None:
            await self.kv_events.remove_endpoint(endpoint_id)


GATEWAY: web.AppKey[Gateway] = web.AppKey("lanterna_gateway")
