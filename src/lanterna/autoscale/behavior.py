"""Stabilisation: HPA-style behaviour so a noisy recommendation does not become a flapping replica count.

Per variant, with time passed in (no clock):

- stabilisation windows: the target is the *lowest* recommendation of the last ``scale_up_window_s`` when above
  the current count (scale up only for load that persisted) and the *highest* of the last ``scale_down_window_s``
  when below it (scale down only to what every recent recommendation allowed). Kubernetes' defaults: 0 s up,
  300 s down.
- rate limits: at most ``max(scale_up_pods, ceil(current x scale_up_percent / 100))`` replicas added per
  ``period_s`` (HPA: 4 pods or 100 % per 15 s) and at most ``scale_down_pods`` removed per period.
- cool-down: no scale-down within ``scale_down_delay_after_up_s`` of a scale-up (the new replicas have not
  reported metrics worth judging yet).

Going to zero and coming back from zero are the idle rule's business and bypass the windows (the idle period is
itself the stabilisation), but are recorded as changes like any other.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ScalingBehavior:
    scale_up_window_s: float = 0.0
    scale_down_window_s: float = 300.0
    period_s: float = 15.0
    scale_up_pods: int = 4
    scale_up_percent: float = 100.0
    scale_down_pods: int = 1
    scale_down_delay_after_up_s: float = 60.0

    def __post_init__(self) -> None:
        if min(self.scale_up_window_s, self.scale_down_window_s, self.scale_down_delay_after_up_s) < 0:
            raise ValueError("windows and delays must be >= 0")
        if self.period_s <= 0 or self.scale_up_pods < 1 or self.scale_down_pods < 1:
            raise ValueError("period_s must be > 0 and step limits >= 1")


@dataclass(slots=True)
class Stabilizer:
    """One variant's recommendation history and recent changes (bounded by the longest window)."""

    behavior: ScalingBehavior
    _recs: deque[tuple[float, int]] = field(default_factory=deque)
    _changes: deque[tuple[float, int]] = field(default_factory=deque)
    _last_up: float = -math.inf
    _first: tuple[float, int] | None = None

    def apply(self, now: float, current: int, recommended: int) -> tuple[int, str]:
        """The target to publish now, and why it differs from ``recommended`` ('' when it does not)."""
        b = self.behavior
        if self._first is None:
            self._first = (now, current)
        first = self._first
        self._recs.append((now, recommended))
        horizon = now - max(b.scale_up_window_s, b.scale_down_window_s, b.period_s)
        while self._recs and self._recs[0][0] < horizon:
            self._recs.popleft()
        while self._changes and self._changes[0][0] <= now - b.period_s:
            self._changes.popleft()
        target, why = recommended, ""
        if recommended > current:
            target = min(r for t, r in self._recs if t >= now - b.scale_up_window_s)
            target = max(target, current)
            added = sum(d for _, d in self._changes if d > 0)
            room = max(b.scale_up_pods, math.ceil(current * b.scale_up_percent / 100)) - added
            if target - current > room:
                target, why = current + max(0, room), f"scale-up limited to {max(0, room)} per {b.period_s:g}s"
            elif target < recommended:
                why = f"scale-up stabilised over {b.scale_up_window_s:g}s"
        elif recommended < current:
            if now - self._last_up < b.scale_down_delay_after_up_s:
                return current, f"scale-down held {b.scale_down_delay_after_up_s:g}s after a scale-up"
            target = max(r for t, r in self._recs if t >= now - b.scale_down_window_s)
            if now - first[0] < b.scale_down_window_s:  # NOTE: before any history, the count we found
                target = max(target, first[1])           # counts as recommended: no scale-down at start
            target = min(target, current)
            removed = -sum(d for _, d in self._changes if d < 0)
            room = b.scale_down_pods - removed
            if current - target > room:
                target, why = current - max(0, room), f"scale-down limited to {b.scale_down_pods} per {b.period_s:g}s"
            elif target > recommended:
                why = f"scale-down stabilised over {b.scale_down_window_s:g}s"
        self._note_change(now, current, target)
        return target, why

    def record(self, now: float, current: int, target: int) -> None:
        """Note a target decided outside the windows (scale to/from zero): later windows, rate limits and the
        cool-down see it as if recommended."""
        self._recs.append((now, target))
        self._note_change(now, current, target)

    def _note_change(self, now: float, current: int, target: int) -> None:
        if target != current:
            self._changes.append((now, target - current))
            if target > current:
                self._last_up = now
