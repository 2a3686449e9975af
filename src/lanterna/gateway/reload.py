"""Hot reload of the scheduler config: poll the ``EndpointPickerConfig`` file, validate, swap atomically.

Polling (``gateway.scheduler_reload_s``, default 1 s) needs no extra dependency and works where inotify
does not (Kubernetes ConfigMap volumes swap a symlink; network filesystems). A change is the file's
(mtime, size, inode) signature moving. On a change the file is read and validated off the event loop,
a new ``Scheduler`` is built, and ``Gateway.scheduler`` is replaced in one assignment: requests already
past ``schedule()`` keep the scheduler they started with (``dispatch`` holds its own reference), the next
request uses the new one. An invalid file keeps the old scheduler, logs ``scheduler_config_invalid`` with
the one-line reason, and counts ``result="failure"``; fixing the file is picked up on the next poll.

NOTE: plugin state (the approximate prefix index, LRU scorers) starts empty after a swap; the KV-event
index of precise routing is shared, so it survives. Enabling precise routing needs a restart (its ZMQ
subscribers and tokenizers are wired at startup).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from lanterna.config.epp import EppConfig
from lanterna.errors import ConfigError
from lanterna.routing.state import RoutingState
from lanterna.scheduler import Scheduler, SchedulerServices, load_epp_config

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    message: str  # "" on success, else the one-line reason the old config was kept


class ReloadMetrics:
    __slots__ = ("reloads", "last_success")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reloads = Counter("lanterna_gateway_scheduler_config_reloads_total",
                               "Scheduler config reload attempts after the file changed, by result.", ("result",),
                               registry=registry)
        self.last_success = Gauge("lanterna_gateway_scheduler_config_last_reload_success",
                                  "1 if the last scheduler config reload succeeded, 0 if the old config was kept.",
                                  registry=registry)
        self.last_success.set(1)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks: a ConfigMap's ..data swap changes the target's inode
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


PRECISE_TYPE = "precise-prefix-cache-scorer"


def uses_precise(epp: EppConfig) -> bool:
    return any(p.type == PRECISE_TYPE for p in epp.plugins)


def build_scheduler(gw: RoutingState, epp: EppConfig) -> Scheduler:
    """A scheduler for ``epp`` sharing the gateway's rng, clock and KV-event index (raises ConfigError)."""
    if uses_precise(epp) and gw.kv_index is None and gw.cfg.kvindex.enabled:
        raise ConfigError("precise-prefix-cache-scorer was not configured at startup; restart the gateway to "
                          "enable precise routing")
    sched = Scheduler.from_config(epp, rng=gw.rng, clock=gw.clock, services=SchedulerServices(kv_index=gw.kv_index))
    return timed(gw, sched)


def timed(gw: RoutingState, sched: Scheduler) -> Scheduler:
    """Report ``sched``'s plugin calls to the gateway's per-plugin duration histogram (GAIE's
    ``inference_extension_plugin_duration_seconds``): every scheduler the gateway runs goes through here.
    One scheduling cycle in ``gateway.plugin_timing_every`` is timed (see ``Scheduler.set_plugin_timer``)."""
    sched.set_plugin_timer(gw.metrics.observe_plugin, time.perf_counter, every=gw.cfg.gateway.plugin_timing_every)
    return sched


class SchedulerReloader:
    """One polling task per gateway, owned by the app's cleanup context."""

    def __init__(self, gw: RoutingState, path: str | Path, interval_s: float) -> None:
        self._gw = gw
        self.path = Path(path)
        self._interval_s = interval_s
        self._seen = _signature(self.path)  # the file the gateway started with
        self._metrics = ReloadMetrics(gw.metrics.registry)
        self._task: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[ReloadResult]] = []

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll(), name="scheduler-config-reload")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for w in self._waiters:
            w.cancel()
        self._waiters.clear()

    def next_result(self) -> asyncio.Future[ReloadResult]:
        """Resolves with the outcome of the next reload attempt (tests and operators await it)."""
        fut: asyncio.Future[ReloadResult] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return fut

    async def check(self) -> ReloadResult | None:
        """Reload if the file changed since last seen; None when it did not change."""
        sig = _signature(self.path)
        if sig == self._seen:
            return None
        self._seen = sig
        result = await self._reload()
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(result)
        return result

    async def _reload(self) -> ReloadResult:
        try:
            epp = await asyncio.to_thread(load_epp_config, self.path)
            sched = build_scheduler(self._gw, epp)
        except ConfigError as exc:
            return self._failed(str(exc))
        except Exception as exc:  # noqa: BLE001 - a plugin factory bug must not kill the poller or the gateway
            return self._failed(f"{type(exc).__name__}: {exc}")
        self._gw.scheduler = sched  # the swap: one assignment, between two requests on this loop
        self._metrics.reloads.labels("success").inc()
        self._metrics.last_success.set(1)
        log.info("scheduler_config_reloaded", extra={"path": str(self.path)})
        return ReloadResult(True, "")

    def _failed(self, message: str) -> ReloadResult:
        self._metrics.reloads.labels("failure").inc()
        self._metrics.last_success.set(0)
        log.error("scheduler_config_invalid", extra={"path": str(self.path), "error": message,
                                                     "action": "kept the previous scheduler config"})
        return ReloadResult(False, message)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - keep polling; the next change gets another try
                log.exception("scheduler_config_reload_error", extra={"path": str(self.path)})


def start_reloader(gw: RoutingState) -> SchedulerReloader | None:
    """Watch the scheduler config when it is a file and reloading is on (``gateway.scheduler_reload_s`` > 0)."""
    src = gw.cfg.scheduler
    interval = gw.cfg.gateway.scheduler_reload_s
    if not isinstance(src, str) or interval <= 0:
        return None
    r = SchedulerReloader(gw, src, interval)
    r.start()
    return r
