"""Per-plugin timing: wrappers that report each plugin call's duration to a callback (GAIE's
``inference_extension_plugin_duration_seconds``).

Why wrappers and not a check inside the loops: with no timer set the scheduler runs the very same plugin
objects as before, so the untimed path costs nothing at all. ``Scheduler.set_plugin_timer`` builds timed
copies of the profiles once; the pure core never reads a clock itself, it calls the injected
``perf_counter`` (the gateway passes ``time.perf_counter``; a test passes a fake).

Extension-point labels: ``DataProducer``, ``ProfileHandler``, ``Filter``, ``Scorer``, ``Picker``,
``PreRequest``, ``ResponseComplete``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.profile import SchedulerProfile, WeightedScorer
from lanterna.scheduler.framework.types import ProfileResult, SchedRequest, SchedulingResult

PluginTimer = Callable[[str, str, str, float], None]  # (extension_point, plugin_type, plugin_name, seconds)
PerfCounter = Callable[[], float]


class _Timed:
    """Shared state of one timed plugin role; ``name``/``type_name`` mirror the plugin's."""

    __slots__ = ("_p", "_point", "_timer", "_now", "name", "type_name")

    def __init__(self, plugin: Any, point: str, timer: PluginTimer, now: PerfCounter) -> None:
        self._p = plugin
        self._point = point
        self._timer = timer
        self._now = now
        self.name: str = getattr(plugin, "name", "?")
        self.type_name: str = getattr(plugin, "type_name", type(plugin).__name__)

    def _done(self, t0: float) -> None:
        self._timer(self._point, self.type_name, self.name, self._now() - t0)


class TimedFilter(_Timed):
    __slots__ = ()

    def filter(self, req: SchedRequest, candidates: list[Endpoint]) -> list[Endpoint]:
        t0 = self._now()
        try:
            out: list[Endpoint] = self._p.filter(req, candidates)
            return out
        finally:
            self._done(t0)


class TimedScorer(_Timed):
    __slots__ = ()

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        t0 = self._now()
        try:
            out: dict[str, float] = self._p.score(req, candidates)
            return out
        finally:
            self._done(t0)


class TimedPicker(_Timed):
    __slots__ = ()

    def pick(self, req: SchedRequest, scores: dict[str, float], candidates: list[Endpoint],
             rng: random.Random) -> list[Endpoint]:
        t0 = self._now()
        try:
            out: list[Endpoint] = self._p.pick(req, scores, candidates, rng)
            return out
        finally:
            self._done(t0)


class TimedHandler(_Timed):
    """Times ``pick`` and ``process_results`` together under ``ProfileHandler``."""

    __slots__ = ()

    def pick(self, req: SchedRequest, profiles: Mapping[str, Any],
             results: Mapping[str, ProfileResult | None]) -> list[str]:
        t0 = self._now()
        try:
            out: list[str] = self._p.pick(req, profiles, results)
            return out
        finally:
            self._done(t0)

    def process_results(self, req: SchedRequest, results: dict[str, ProfileResult | None]) -> SchedulingResult:
        t0 = self._now()
        try:
            out: SchedulingResult = self._p.process_results(req, results)
            return out
        finally:
            self._done(t0)


class TimedProducer(_Timed):
    __slots__ = ()

    def produce(self, req: SchedRequest, candidates: list[Endpoint]) -> None:
        t0 = self._now()
        try:
            self._p.produce(req, candidates)
        finally:
            self._done(t0)


class TimedPreRequest(_Timed):
    __slots__ = ()

    def pre_request(self, req: SchedRequest, result: SchedulingResult) -> None:
        t0 = self._now()
        try:
            self._p.pre_request(req, result)
        finally:
            self._done(t0)


class TimedResponseComplete(_Timed):
    __slots__ = ()

    def response_complete(self, req: SchedRequest, result: SchedulingResult, endpoint_id: str,
                          num_cached_tokens: int | None) -> None:
        t0 = self._now()
        try:
            self._p.response_complete(req, result, endpoint_id, num_cached_tokens)
        finally:
            self._done(t0)


def timed_profile(prof: SchedulerProfile, timer: PluginTimer, now: PerfCounter) -> SchedulerProfile:
    """A copy of ``prof`` whose filters, scorers and picker report their durations."""
    return SchedulerProfile(
        name=prof.name,
        filters=[TimedFilter(f, "Filter", timer, now) for f in prof.filters],
        scorers=[WeightedScorer(TimedScorer(ws.scorer, "Scorer", timer, now), ws.weight) for ws in prof.scorers],
        picker=TimedPicker(prof.picker, "Picker", timer, now) if prof.picker is not None else None,
    )
