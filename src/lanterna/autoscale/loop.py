"""The live autoscaling loop: scrape, decide, publish ``wva_*`` gauges, actuate (``lanterna autoscale``, ``up``).

Every ``interval_s`` (or at once after ``wake()``: a request held at zero replicas) one ``tick``:

1. GET the gateway's ``/metrics`` (arrivals, flow-control queue, running) and each endpoint's ``/metrics``
   (KV use, waiting, running, token counters); an endpoint whose scrape fails is not ready.
2. Counts per variant: ready = endpoints scraped; starting = what the actuator has asked for minus ready.
3. ``Autoscaler.decide`` (pure) -> publish ``wva_desired_replicas`` / ``wva_current_replicas`` /
   ``wva_desired_ratio`` {variant_name, namespace, accelerator_type} (WVA's names; HPA/KEDA read them) and
   ``wva_replica_scaling_total`` {variant_name, namespace, direction, reason} (reason: the policy's name, bounded).
4. With an actuator: ``scale(variant, target)`` where the target differs from what it runs.

A failed gateway scrape skips the tick (no decision on missing data: the gauges keep their last values).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from lanterna.autoscale.autoscaler import Autoscaler
from lanterna.autoscale.signals import DemandMeter, EndpointSignals, parse_endpoint, parse_gateway
from lanterna.autoscale.types import Decision, PoolSnapshot, ReplicaMetrics, Variant, VariantState
from lanterna.clock import Clock, MonotonicClock

log = logging.getLogger(__name__)

LABELS = ("variant_name", "namespace", "accelerator_type")


class Actuator(Protocol):
    """Something that runs replicas: a Deployment's scale subresource, or the local sim launcher."""

    async def replicas(self) -> dict[str, int]:
        """Replicas asked for per variant (ready + starting)."""
        ...

    async def scale(self, variant: str, replicas: int) -> None: ...


class WvaMetrics:
    """WVA's published gauges on their own registry (the autoscaler's ``/metrics``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry(auto_describe=True)
        self.desired = Gauge("wva_desired_replicas", "Desired number of replicas for each variant", LABELS,
                             registry=r)
        self.current = Gauge("wva_current_replicas", "Current number of replicas for each variant", LABELS,
                             registry=r)
        self.ratio = Gauge("wva_desired_ratio", "Ratio of the desired number of replicas and the current number "
                           "of replicas for each variant", LABELS, registry=r)
        self.scaling = Counter("wva_replica_scaling", "Scaling operations per variant and direction",
                               ("variant_name", "namespace", "direction", "reason"), registry=r)

    def publish(self, decision: Decision, namespace: str) -> None:
        for v in decision.variants:
            labels = (v.variant, namespace, v.accelerator)
            self.desired.labels(*labels).set(v.target)
            self.current.labels(*labels).set(v.current)
            self.ratio.labels(*labels).set(decision.desired_ratio(v.variant))


@dataclass(frozen=True, slots=True)
class LoopConfig:
    gateway_url: str  # http://host:port (``/metrics`` is appended)
    namespace: str = "default"
    interval_s: float = 15.0
    scrape_timeout_s: float = 2.0


class AutoscaleLoop:
    """One per pool. ``endpoints()`` names the endpoints to scrape per variant (static, or the launcher's)."""

    def __init__(self, scaler: Autoscaler, variants: Sequence[Variant], config: LoopConfig,
                 endpoints: Callable[[], Mapping[str, Sequence[str]]], actuator: Actuator | None = None,
                 metrics: WvaMetrics | None = None, clock: Clock | None = None) -> None:
        self.scaler = scaler
        self.variants = tuple(variants)
        self.config = config
        self.endpoints = endpoints
        self.actuator = actuator
        self.metrics = metrics or WvaMetrics()
        self.clock = clock or MonotonicClock()
        self.meter = DemandMeter()
        self.last: Decision | None = None
        self._desired: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    def wake(self, _model: str = "") -> None:
        """Decide now (a request waits at zero replicas); repeated calls before the tick collapse into one."""
        self._wake.set()

    async def run(self) -> None:
        """Tick until cancelled; a tick that raises is logged and the loop goes on."""
        try:
            while True:
                self._wake.clear()
                try:
                    await self.tick()
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.warning("autoscale_tick_failed", extra={"error": str(exc)})
                try:
                    await asyncio.wait_for(self._wake.wait(), self.config.interval_s)
                except TimeoutError:
                    pass
        finally:
            await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get(self, url: str) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.scrape_timeout_s))
        async with self._session.get(url) as resp:
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
            return await resp.text()

    async def _scrape(self, address: str) -> EndpointSignals | None:
        try:
            return parse_endpoint(await self._get(f"http://{address}/metrics"))
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None  # not (yet) ready: a starting replica, or a dead one

    async def tick(self) -> Decision:
        gw = parse_gateway(await self._get(self.config.gateway_url.rstrip("/") + "/metrics"))
        by_variant = {k: list(v) for k, v in self.endpoints().items()}
        addrs = [(v, a) for v, lst in by_variant.items() for a in lst]
        scraped = await asyncio.gather(*(self._scrape(a) for _, a in addrs))
        now = self.clock.now()
        ready: dict[str, int] = {}
        replicas: list[ReplicaMetrics] = []
        tokens: dict[str, float] = {}
        for (variant, addr), sig in zip(addrs, scraped, strict=True):
            if sig is None:
                continue
            ready[variant] = ready.get(variant, 0) + 1
            replicas.append(ReplicaMetrics(addr, variant, sig.kv_cache_usage, sig.num_waiting, sig.num_running))
            tokens[addr] = sig.tokens_total
        asked = await self.actuator.replicas() if self.actuator is not None else {}
        states = tuple(VariantState(v, ready.get(v.name, 0), max(0, asked.get(v.name, 0) - ready.get(v.name, 0)),
                                    self._desired.get(v.name, 0)) for v in self.variants)
        snap = PoolSnapshot(now, states, tuple(replicas), self.meter.update(now, gw, tokens))
        decision = self.scaler.decide(snap)
        self.metrics.publish(decision, self.config.namespace)
        for vd in decision.variants:
            self._desired[vd.variant] = vd.target
            if vd.target != vd.current:
                direction = "up" if vd.target > vd.current else "down"
                self.metrics.scaling.labels(vd.variant, self.config.namespace, direction, self.scaler.policy.name).inc()
                log.info("autoscale_decision", extra={"variant": vd.variant, "current": vd.current,
                                                      "target": vd.target, "reasons": "; ".join(decision.reasons)})
            if self.actuator is not None and vd.target != asked.get(vd.variant, vd.current):
                await self.actuator.scale(vd.variant, vd.target)
        self.last = decision
        return decision
