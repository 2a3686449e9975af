"""The Scheduler: builds plugins from an ``EndpointPickerConfig`` and runs one scheduling cycle per request.

Callers (the gateway, the ext_proc picker, the virtual-time cluster) use three calls:
``schedule(req, candidates)`` -> ``SchedulingResult`` (raises ``NoCapacity``), ``pre_request(req, result)``
once they commit to the pick, and ``response_complete(req, result, endpoint_id, num_cached_tokens)``.
Gateway-side load (``Endpoint.load``) is the caller's to update; plugins only read it.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any, TypeGuard

from lanterna.clock import Clock, MonotonicClock
from lanterna.config.epp import EppConfig, ProfilePluginRef
from lanterna.endpoints.types import Endpoint
from lanterna.errors import ConfigError, NoCapacity
from lanterna.scheduler.framework import registry
from lanterna.scheduler.framework.interfaces import (
    DataProducer,
    Filter,
    Picker,
    Plugin,
    PreRequest,
    ProfileHandler,
    ResponseComplete,
    SchedulerServices,
    Scorer,
)
from lanterna.scheduler.framework.profile import SchedulerProfile, WeightedScorer
from lanterna.scheduler.framework.timing import (
    PerfCounter,
    PluginTimer,
    TimedHandler,
    TimedPreRequest,
    TimedProducer,
    TimedResponseComplete,
    timed_profile,
)
from lanterna.scheduler.framework.types import ProfileResult, SchedRequest, SchedulingResult

MAX_PROFILE_ROUNDS = 8  # a handler that keeps asking for profiles is a bug, not a reason to spin


def _is_handler(p: object) -> TypeGuard[ProfileHandler]:
    return callable(getattr(p, "process_results", None)) and callable(getattr(p, "pick", None))


def _is_picker(p: object) -> TypeGuard[Picker]:
    return callable(getattr(p, "pick", None)) and not _is_handler(p)


def _is_filter(p: object) -> TypeGuard[Filter]:
    return callable(getattr(p, "filter", None))


def _is_scorer(p: object) -> TypeGuard[Scorer]:
    return callable(getattr(p, "score", None))


class Scheduler:
    def __init__(
        self,
        plugins: Mapping[str, Plugin],
        profiles: Mapping[str, SchedulerProfile],
        handler: ProfileHandler,
        rng: random.Random,
        clock: Clock,
    ) -> None:
        self.plugins = dict(plugins)
        self.profiles = dict(profiles)
        self.handler = handler
        self.rng = rng
        self.clock = clock
        everything = [*self.plugins.values(), handler]
        for prof in self.profiles.values():
            everything += [*prof.filters, *(ws.scorer for ws in prof.scorers), prof.picker]
        uniq = list({id(p): p for p in everything if p is not None}.values())
        self._producers = [p for p in uniq if isinstance(p, DataProducer)]
        self._pre = [p for p in uniq if isinstance(p, PreRequest)]
        self._removed: list[Any] = [p for p in uniq if callable(getattr(p, "endpoint_removed", None))]
        self._done = [p for p in uniq if isinstance(p, ResponseComplete)]
        # What schedule() runs: the plugins themselves, or (1 cycle in ``_every``) timed wrappers.
        self._every = 0  # 0: untimed; n: cycle k uses the timed wrappers when k % n == 0 (the first included)
        self._sched_tick = self._pre_tick = self._done_tick = 0
        self._timed: tuple[ProfileHandler, dict[str, SchedulerProfile], list[Any]] | None = None
        self._timed_pre: list[Any] = []
        self._timed_done: list[Any] = []

    def set_plugin_timer(self, timer: PluginTimer | None, perf_counter: PerfCounter | None = None, *,
                         every: int = 1) -> None:
        """Report plugin calls as ``timer(extension_point, plugin_type, plugin_name, seconds)``, timed with the
        injected ``perf_counter``; ``None`` restores the untimed plugins (zero overhead).

        ``every``: time one scheduling cycle in ``every`` (the first one included), and independently one
        ``pre_request`` / ``response_complete`` call in ``every``. Why: a timed call costs a clock read and a
        histogram observation per plugin (~10 per request); a duration histogram stays representative when
        sampled. Deterministic (a counter, no randomness), so picks never depend on it."""
        if timer is None or perf_counter is None or every < 1:
            self._every, self._timed, self._timed_pre, self._timed_done = 0, None, [], []
            return
        now = perf_counter
        handler: Any = TimedHandler(self.handler, "ProfileHandler", timer, now)
        self._timed = (handler, {n: timed_profile(p, timer, now) for n, p in self.profiles.items()},
                       [TimedProducer(p, "DataProducer", timer, now) for p in self._producers])
        self._timed_pre = [TimedPreRequest(p, "PreRequest", timer, now) for p in self._pre]
        self._timed_done = [TimedResponseComplete(p, "ResponseComplete", timer, now) for p in self._done]
        self._every = every
        self._sched_tick = self._pre_tick = self._done_tick = 0

    @classmethod
    def from_config(
        cls,
        cfg: EppConfig,
        *,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        services: SchedulerServices | None = None,
    ) -> Scheduler:
        clock = clock or MonotonicClock()
        services = dataclasses.replace(services or SchedulerServices(), clock=clock)
        plugins: dict[str, Plugin] = {}
        for spec in cfg.plugins:
            plugins[spec.instance_name] = registry.build(spec.type, spec.instance_name, spec.parameters, services)
        for p in plugins.values():
            bind = getattr(p, "bind", None)
            if callable(bind):
                bind(plugins)
        profiles = {prof.name: _build_profile(prof.name, prof.plugins, plugins, services) for prof in
                    cfg.schedulingProfiles}
        handlers = [p for p in plugins.values() if _is_handler(p)]
        if len(handlers) > 1:
            names = [n for n, p in plugins.items() if _is_handler(p)]
            raise ConfigError(f"more than one profile handler: {', '.join(names)}")
        if handlers:
            handler: ProfileHandler = handlers[0]
        elif len(profiles) == 1:
            built = registry.build("single-profile-handler", "single-profile-handler", {}, services)
            assert _is_handler(built)
            handler = built
        else:
            raise ConfigError("several scheduling profiles need a profile handler (e.g. disagg-profile-handler)")
        check = getattr(handler, "check_profiles", None)
        if callable(check):
            check(profiles)
        return cls(plugins, profiles, handler, rng or random.Random(0), clock)

    def schedule(self, req: SchedRequest, candidates: list[Endpoint]) -> SchedulingResult:
        """One scheduling cycle; raises ``NoCapacity`` when no endpoint can serve ``req``."""
        if not candidates:
            raise NoCapacity(f"no endpoints available for model {req.model!r}")
        handler: ProfileHandler = self.handler
        profiles, producers = self.profiles, self._producers
        if self._timed is not None:
            tick = self._sched_tick
            self._sched_tick = tick + 1 if tick + 1 < self._every else 0
            if tick == 0:
                handler, profiles, producers = self._timed
        for p in producers:
            p.produce(req, candidates)
        results: dict[str, ProfileResult | None] = {}
        for _ in range(MAX_PROFILE_ROUNDS):
            names = handler.pick(req, self.profiles, results)
            if not names:
                break
            for n in names:
                results[n] = profiles[n].run(req, candidates, self.rng)
        return handler.process_results(req, results)

    def pre_request(self, req: SchedRequest, result: SchedulingResult) -> None:
        plugins: list[Any] = self._pre
        if self._timed is not None:
            tick = self._pre_tick
            self._pre_tick = tick + 1 if tick + 1 < self._every else 0
            if tick == 0:
                plugins = self._timed_pre
        for p in plugins:
            p.pre_request(req, result)

    def response_complete(
        self, req: SchedRequest, result: SchedulingResult, endpoint_id: str, num_cached_tokens: int | None
    ) -> None:
        plugins: list[Any] = self._done
        if self._timed is not None:
            tick = self._done_tick
            self._done_tick = tick + 1 if tick + 1 < self._every else 0
            if tick == 0:
                plugins = self._timed_done
        for p in plugins:
            p.response_complete(req, result, endpoint_id, num_cached_tokens)

    def endpoint_removed(self, endpoint_id: str) -> None:
        """An endpoint left the pool: plugins drop its per-endpoint state (keeps memory bounded)."""
        for p in self._removed:
            p.endpoint_removed(endpoint_id)

    def plugin_names(self) -> dict[str, list[str]]:
        """Profile name -> its plugins in run order (scorers as ``name x weight``), for logs and /debug."""
        return {name: prof.plugin_names() for name, prof in self.profiles.items()}

    def plugin(self, name: str) -> Plugin:
        return self.plugins[name]


def _build_profile(
    name: str, refs: list[ProfilePluginRef], plugins: Mapping[str, Plugin], services: SchedulerServices
) -> SchedulerProfile:
    prof = SchedulerProfile(name=name)
    for ref in refs:
        p = plugins[ref.pluginRef]
        used = False
        if _is_filter(p):
            prof.filters.append(p)
            used = True
        if _is_scorer(p):
            prof.scorers.append(WeightedScorer(p, ref.effective_weight))
            used = True
        if _is_picker(p):
            if prof.picker is not None:
                raise ConfigError(f"profile {name!r} has more than one picker ({getattr(prof.picker, 'name', '?')}, {ref.pluginRef})")
            prof.picker = p
            used = True
        if not used:
            raise ConfigError(
                f"profile {name!r}: plugin {ref.pluginRef!r} (type {p.type_name}) is not a filter, scorer or picker"
            )
    if prof.picker is None:
        picker = registry.build("max-score-picker", "max-score-picker", {}, services)
        assert _is_picker(picker)
        prof.picker = picker
    return prof
