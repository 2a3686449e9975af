"""The autoscaler: a policy's recommendation, then guards, bounds and stabilisation, as one pure decision.

Calling protocol: build a ``PoolSnapshot`` every ``interval`` seconds (ready replicas' fresh metrics, ready and
starting counts per variant, the gateway's demand over the last window) and call ``decide(snapshot)`` once; publish
``Decision.targets`` (``wva_desired_replicas``) and/or actuate them. ``decide`` keeps a little state between calls
(recommendation history, the stuck ceiling), always keyed by ``snapshot.now``: replaying the same snapshots gives
the same decisions.

Order of the stages (each may override the previous one; every override leaves a reason):

1. policy      saturation | token-capacity | model-based | fixed -> raw targets per variant
2. stuck       work waits, replicas are ready and nothing is processed: never scale down, and add at most
               ``stuck_max_extra`` replicas over the count when it got stuck (a new replica may be healthy; an
               endless scale-up against a queue nobody drains is not)
3. idle        scale-to-zero after ``retention_s`` without a request (and nothing queued or in flight);
               scale-from-zero: nothing running or starting and work waiting -> one replica of the cheapest variant
               (deduplicated: the starting replica is supply from then on)
4. bounds      per-variant min/max; at least one replica in total while requests wait or without scale-to-zero
5. behaviour   stabilisation windows, step limits, cool-down (``behavior.Stabilizer``); 0 <-> 1 bypasses it
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from lanterna.autoscale.behavior import ScalingBehavior, Stabilizer
from lanterna.autoscale.types import Decision, PoolSnapshot, Recommendation, VariantDecision, VariantState


class Policy(Protocol):
    """A scaling policy: pure, one call per decision."""

    @property
    def name(self) -> str: ...

    def recommend(self, snap: PoolSnapshot) -> Recommendation:
        """Targets per variant (absent: keep the current count) with reasons."""
        ...


@dataclass(frozen=True, slots=True)
class FixedPolicy:
    """Policy ``fixed``: every variant at ``replicas`` (a baseline, and the answer when autoscaling is off)."""

    replicas: int
    name: str = "fixed"

    def recommend(self, snap: PoolSnapshot) -> Recommendation:
        return Recommendation({s.name: self.replicas for s in snap.variants}, (f"fixed at {self.replicas}",))


@dataclass(frozen=True, slots=True)
class ScaleToZero:
    """WVA's ``enable_scale_to_zero`` / ``retention_period`` (default 10 min)."""

    enabled: bool = False
    retention_s: float = 600.0


@dataclass(frozen=True, slots=True)
class AutoscalerConfig:
    behavior: ScalingBehavior = ScalingBehavior()
    scale_to_zero: ScaleToZero = ScaleToZero()
    stuck_max_extra: int = 1


def _cheapest(states: tuple[VariantState, ...]) -> VariantState:
    return min(states, key=lambda s: (s.variant.cost_per_hour, s.name))


class Autoscaler:
    """Policy + guards + behaviour (module docstring). One instance per model/pool; not thread-safe."""

    def __init__(self, policy: Policy, config: AutoscalerConfig = AutoscalerConfig()) -> None:
        self.policy = policy
        self.config = config
        self._stab: dict[str, Stabilizer] = {}
        self._stuck_ceiling: int | None = None
        self._stuck_since: float | None = None

    def decide(self, snap: PoolSnapshot) -> Decision:
        if not snap.variants:
            return Decision(snap.now, (), ("no variants",))
        rec = self.policy.recommend(snap)
        raw = {s.name: rec.targets.get(s.name, s.num_current) for s in snap.variants}
        targets = dict(raw)
        reasons = [f"{self.policy.name}: {r}" for r in rec.reasons]
        why: dict[str, str] = {}
        self._stuck_guard(snap, targets, reasons)
        forced = self._idle_rule(snap, targets, reasons)
        self._bounds(snap, targets, why)
        out = []
        for s in snap.variants:
            stab = self._stab.setdefault(s.name, Stabilizer(self.config.behavior))
            t = targets[s.name]
            if s.name in forced or (s.num_current == 0 and t > 0):
                stab.record(snap.now, s.num_current, t)
                note = why.get(s.name, "")
            else:
                t, note = stab.apply(snap.now, s.num_current, t)
                note = note or why.get(s.name, "")
            out.append(VariantDecision(s.name, s.variant.accelerator, s.num_current, raw[s.name], t,
                                       note or ("keep" if t == s.num_current else f"{s.num_current} -> {t}")))
        return Decision(snap.now, tuple(out), tuple(reasons))

    # -- stages ------------------------------------------------------------------------------------------------

    def _stuck_guard(self, snap: PoolSnapshot, targets: dict[str, int], reasons: list[str]) -> None:
        d = snap.demand
        stuck = (d.processed_tokens_per_s is not None and d.processed_tokens_per_s <= 0.0 and snap.num_ready > 0
                 and (snap.num_waiting > 0 or d.num_in_flight > 0))
        if not stuck:
            self._stuck_ceiling = self._stuck_since = None
            return
        if self._stuck_ceiling is None:
            self._stuck_ceiling, self._stuck_since = snap.num_current + self.config.stuck_max_extra, snap.now
        assert self._stuck_since is not None
        ceiling = max(self._stuck_ceiling, 1)
        room = ceiling - snap.num_current
        for s in sorted(snap.variants, key=lambda s: (s.variant.cost_per_hour, s.name)):
            t = max(targets[s.name], s.num_current)  # never scale down while stuck
            extra = min(t - s.num_current, max(0, room))
            targets[s.name] = s.num_current + extra
            room -= extra
        reasons.append(f"stuck for {snap.now - self._stuck_since:.0f}s: {snap.num_waiting} waiting, "
                       f"{d.num_in_flight} in flight, nothing processed; no scale-down, at most {ceiling} replicas")

    def _idle_rule(self, snap: PoolSnapshot, targets: dict[str, int], reasons: list[str]) -> set[str]:
        """Scale to zero / from zero; returns the variants whose target it forced."""
        d, stz = snap.demand, self.config.scale_to_zero
        busy = d.num_queued > 0 or d.num_in_flight > 0 or snap.num_waiting > 0
        if stz.enabled and not busy and d.idle_for_s(snap.now) >= stz.retention_s:
            if snap.num_current:
                idle = d.idle_for_s(snap.now)
                reasons.append(f"idle for {'ever' if math.isinf(idle) else f'{idle:.0f}s'} >= "
                               f"{stz.retention_s:g}s: scale to zero")
            for s in snap.variants:
                targets[s.name] = 0
            return {s.name for s in snap.variants}
        if snap.num_current == 0 and sum(targets.values()) == 0 and (busy or d.arrival_rate_rps > 0):
            pick = _cheapest(snap.variants)
            targets[pick.name] = 1
            reasons.append(f"scale from zero: {d.num_queued} queued -> 1 x {pick.name}")
            return {pick.name}
        return set()

    def _bounds(self, snap: PoolSnapshot, targets: dict[str, int], why: dict[str, str]) -> None:
        for s in snap.variants:
            lo, hi = s.variant.min_replicas, s.variant.max_replicas
            t = targets[s.name]
            if t < lo or t > hi:
                targets[s.name] = min(max(t, lo), hi)
                why[s.name] = f"clamped to [{lo}, {hi}]"
        if sum(targets.values()) == 0:
            waiting = snap.num_waiting + snap.demand.num_in_flight
            if waiting or not self.config.scale_to_zero.enabled:
                # NOTE: work that waits never loses its last (maybe still starting) replica, whatever the policy
                # says: a rate-based policy sees no arrivals in a quiet window and would cancel the cold start
                pick = max((s for s in snap.variants if s.num_current), default=_cheapest(snap.variants),
                           key=lambda s: s.num_ready)
                targets[pick.name] = 1
                why[pick.name] = (f"{waiting} requests waiting: keep one replica" if waiting
                                  else "minimum one replica (scale-to-zero disabled)")
