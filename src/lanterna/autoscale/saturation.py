"""Saturation scaling, WVA's V1 analyzer (PROTOCOLS.md section 7): scale on KV-cache use and queue depth.

Per ready replica i (thresholds ``kv_cache_threshold`` = 0.80, ``queue_length_threshold`` = 5):

    saturated_i   = kv_i >= 0.80 or queue_i >= 5
    spare_kv      = mean over non-saturated (0.80 - kv_i)      spare_queue = mean over non-saturated (5 - queue_i)
    scale up      when spare_kv <= kv_spare_trigger (0.10) or spare_queue <= queue_spare_trigger (3),
                  or when every ready replica is saturated
    scale down    when N_non_sat >= 2 and, with the non-saturated load spread over N_non_sat - 1 replicas,
                  0.80 - sum(kv)/(N-1) > 0.10 and 5 - sum(queue)/(N-1) > 3

Targets (cost-aware across variants): scale up adds one replica to the cheapest variant (``cost_per_hour``, ties:
name ascending) that has no replica starting (WVA's cascade prevention) and is under its maximum; scale down
removes one from the most expensive (ties: name descending) above its minimum, never below one replica in total
(going to zero is the idle rule's job). A variant whose previous ``desired`` differs from its current count keeps
that desired (the actuator has not caught up yet). Everything else stays at its current count: replicas still
starting count as supply.

Boundaries: WVA's docs trigger scale-up at an average spare exactly equal to the trigger (0.65 and 0.75 KV -> 0.10
-> "scale-up triggered"), so the boundary belongs to "needs capacity": scale-up at <=, scale-down needs >, and a
scale-down can never land exactly on a scale-up (no flap at the boundary). Floats are compared with 1e-9 slack so
0.80 - 0.75 counts as 0.05.

Deviation from WVA (documented in docs/design/autoscale.md): no scale-down while any ready replica is saturated or
requests wait in the gateway's queue. WVA only looks at the non-saturated replicas, so a replica stuck with a full
queue (broken, not draining) would let the healthy ones be removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lanterna.autoscale.types import PoolSnapshot, Recommendation, ReplicaMetrics, VariantState

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class SaturationConfig:
    """WVA's ``capacity-scaling-config`` defaults (``kvCacheThreshold`` ... ``queueSpareTrigger``)."""

    kv_cache_threshold: float = 0.80
    queue_length_threshold: float = 5.0
    kv_spare_trigger: float = 0.10
    queue_spare_trigger: float = 3.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.kv_spare_trigger <= self.kv_cache_threshold <= 1.0:
            raise ValueError("need 0 <= kv_spare_trigger <= kv_cache_threshold <= 1")
        if self.queue_length_threshold < 0 or self.queue_spare_trigger < 0:
            raise ValueError("queue thresholds must be >= 0")


@dataclass(frozen=True, slots=True)
class SaturationAnalysis:
    num_replicas: int
    num_non_saturated: int
    avg_spare_kv: float  # over non-saturated replicas (0 when there are none)
    avg_spare_queue: float
    should_scale_up: bool
    scale_down_safe: bool
    reason: str
    remaining_spare_kv: float | None = None  # after spreading the load over N_non_sat - 1 (None: N_non_sat < 2)
    remaining_spare_queue: float | None = None


def is_saturated(m: ReplicaMetrics, cfg: SaturationConfig) -> bool:
    return m.kv_cache_usage >= cfg.kv_cache_threshold - _EPS or m.num_waiting >= cfg.queue_length_threshold


def analyze(replicas: Sequence[ReplicaMetrics], cfg: SaturationConfig = SaturationConfig()) -> SaturationAnalysis:
    """WVA's per-model analysis over every ready replica of every variant."""
    free = [m for m in replicas if not is_saturated(m, cfg)]
    n, k = len(replicas), len(free)
    if n == 0:
        return SaturationAnalysis(0, 0, 0.0, 0.0, False, False, "no ready replica reports metrics")
    if k == 0:
        return SaturationAnalysis(n, 0, 0.0, 0.0, True, False, f"all {n} replicas saturated")
    spare_kv = sum(cfg.kv_cache_threshold - m.kv_cache_usage for m in free) / k
    spare_q = sum(cfg.queue_length_threshold - m.num_waiting for m in free) / k
    up_kv = spare_kv <= cfg.kv_spare_trigger + _EPS
    up_q = spare_q <= cfg.queue_spare_trigger + _EPS
    rem_kv = rem_q = None
    down = False
    if k >= 2:
        rem_kv = cfg.kv_cache_threshold - sum(m.kv_cache_usage for m in free) / (k - 1)
        rem_q = cfg.queue_length_threshold - sum(m.num_waiting for m in free) / (k - 1)
        down = rem_kv > cfg.kv_spare_trigger + _EPS and rem_q > cfg.queue_spare_trigger + _EPS
    if up_kv or up_q:
        what = " and ".join(s for s, on in (("KV", up_kv), ("queue", up_q)) if on)
        reason = f"{what} spare capacity low (spare kv {spare_kv:.3f}, queue {spare_q:.2f})"
    elif down:
        reason = f"load fits on {k - 1} non-saturated replicas (spare kv {rem_kv:.3f}, queue {rem_q:.2f} after)"
    else:
        reason = f"within thresholds (spare kv {spare_kv:.3f}, queue {spare_q:.2f})"
    return SaturationAnalysis(n, k, spare_kv, spare_q, up_kv or up_q, down and not (up_kv or up_q), reason,
                              rem_kv, rem_q)


def capacity_targets(analysis: SaturationAnalysis, states: Sequence[VariantState], *,
                     hold_scale_down: str | None = None) -> Recommendation:
    """WVA's ``CalculateCapacityTargets``: +1 on the cheapest eligible variant or -1 on the most expensive one.

    ``hold_scale_down`` (a reason) vetoes the scale-down, e.g. while a replica is saturated or the gateway queues.
    """
    targets = {s.name: s.num_current for s in states}
    reasons = [analysis.reason]
    preserved = {s.name for s in states if s.desired != 0 and s.desired != s.num_current}
    for s in states:
        if s.name in preserved:
            targets[s.name] = s.desired
            reasons.append(f"{s.name}: keeps desired {s.desired} (current {s.num_current} has not caught up)")
    free = [s for s in states if s.name not in preserved]
    if analysis.should_scale_up:
        ok = [s for s in free if s.num_starting == 0 and s.num_current < s.variant.max_replicas]
        if ok:
            pick = min(ok, key=lambda s: (s.variant.cost_per_hour, s.name))
            targets[pick.name] = pick.num_current + 1
            reasons.append(f"scale up cheapest variant {pick.name} ({pick.variant.cost_per_hour:g}/h) to "
                           f"{pick.num_current + 1}")
        elif any(s.num_starting for s in free):
            reasons.append("scale-up waits: replicas are starting (cascade prevention)")
        else:
            reasons.append("scale-up wanted but every variant is at its maximum")
    elif analysis.scale_down_safe:
        total = sum(targets.values())
        ok = [s for s in free if s.num_current > s.variant.min_replicas and s.num_current > 0]
        if hold_scale_down is not None:
            reasons.append(f"scale-down held: {hold_scale_down}")
        elif ok and total > 1:
            pick = max(ok, key=lambda s: (s.variant.cost_per_hour, s.name))
            targets[pick.name] = pick.num_current - 1
            reasons.append(f"scale down most expensive variant {pick.name} ({pick.variant.cost_per_hour:g}/h) to "
                           f"{pick.num_current - 1}")
    return Recommendation(targets, tuple(reasons))


@dataclass(frozen=True, slots=True)
class SaturationPolicy:
    """Policy ``saturation``: WVA V1 over the snapshot's ready replicas, plus the stuck-replica veto."""

    config: SaturationConfig = SaturationConfig()
    name: str = "saturation"

    def recommend(self, snap: PoolSnapshot) -> Recommendation:
        a = analyze(snap.replicas, self.config)
        hold = None
        sat = [m.replica_id for m in snap.replicas if is_saturated(m, self.config)]
        if sat:
            hold = f"{len(sat)} replica(s) saturated ({', '.join(sat[:3])})"
        elif snap.demand.num_queued:
            hold = f"{snap.demand.num_queued} requests queued at the gateway"
        return capacity_targets(a, snap.variants, hold_scale_down=hold)
