"""The local actuator of ``lanterna up --autoscale``: sims started and stopped, added to and drained from the gateway.

Scale-up spawns ``lanterna sim`` processes (``--startup-delay`` plays the model load) and, once each answers
``/health``, adds it to the running gateway (``Gateway.add_endpoint``: the first one releases requests held at
zero). Scale-down picks replicas still starting first (killed at once: they serve nothing), then the ready one
with the least in flight: the gateway stops routing to it, waits for its requests (``Gateway.drain_endpoint``),
then the process is stopped. One variant (the launcher's model).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from lanterna.cluster.launcher import LaunchError, Replica, SimLauncher
from lanterna.endpoints.types import Endpoint
from lanterna.gateway.state import Gateway

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Member:
    replica: Replica
    task: asyncio.Task[None] | None = None  # bring-up (wait for health, add to the gateway)
    ready: bool = False


@dataclass(slots=True)
class LocalActuator:
    """Implements ``autoscale.loop.Actuator`` for ``variant``; ``close()`` stops the replicas it started."""

    launcher: SimLauncher
    gateway: Gateway
    variant: str
    drain_timeout_s: float = 30.0
    members: list[_Member] = field(default_factory=list)
    _retiring: set[asyncio.Task[None]] = field(default_factory=set)

    async def replicas(self) -> dict[str, int]:
        return {self.variant: len(self.members)}

    def endpoints(self) -> dict[str, list[str]]:
        """Addresses to scrape: ready replicas only (a starting one counts through ``replicas``)."""
        return {self.variant: [m.replica.address for m in self.members if m.ready]}

    def adopt(self, replicas: list[Replica]) -> None:
        """Replicas started before the loop (``--replicas`` > 0 with ``--autoscale``), already in the gateway."""
        self.members.extend(_Member(r, ready=True) for r in replicas)

    async def scale(self, variant: str, replicas: int) -> None:
        if variant != self.variant:
            raise KeyError(variant)
        while len(self.members) < replicas:
            m = _Member(self.launcher.spawn())
            m.task = asyncio.create_task(self._bring_up(m), name=f"bring-up {m.replica.name}")
            self.members.append(m)
        while len(self.members) > replicas:
            victim = min(self.members, key=lambda m: (m.ready, self._in_flight(m)))
            self.members.remove(victim)
            task = asyncio.create_task(self._retire(victim), name=f"retire {victim.replica.name}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def _in_flight(self, m: _Member) -> int:
        ep = self.gateway.store.get(m.replica.address)
        return ep.load.in_flight_requests if ep is not None else 0

    async def _bring_up(self, m: _Member) -> None:
        r = m.replica
        try:
            await self.launcher.wait_ready([r])
        except LaunchError as exc:
            log.warning("autoscale_replica_failed", extra={"replica": r.name, "error": str(exc)})
            if m in self.members:
                self.members.remove(m)  # the next tick asks again
            await self.launcher.stop_replica(r)
            return
        await self.gateway.add_endpoint(Endpoint(id=r.address, address=r.address,
                                                 models=frozenset({self.launcher.model}),
                                                 kv_events_endpoint=r.kv_events_endpoint))
        m.ready = True
        log.info("autoscale_replica_ready", extra={"replica": r.name, "address": r.address})

    async def _retire(self, m: _Member) -> None:
        if m.task is not None and not m.task.done():
            m.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await m.task
        if self.gateway.store.get(m.replica.address) is not None:
            left = await self.gateway.drain_endpoint(m.replica.address, self.drain_timeout_s)
            if left:
                log.warning("autoscale_drain_deadline", extra={"replica": m.replica.name, "in_flight": left})
        await self.launcher.stop_replica(m.replica)
        log.info("autoscale_replica_stopped", extra={"replica": m.replica.name})

    async def close(self) -> None:
        """Cancel bring-ups and wait for retirements (the launcher's ``stop`` kills whatever is left)."""
        for m in self.members:
            if m.task is not None and not m.task.done():
                m.task.cancel()
        await asyncio.gather(*(m.task for m in self.members if m.task is not None), *self._retiring,
                             return_exceptions=True)
