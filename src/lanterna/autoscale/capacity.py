"""Capacity policies: demand in units per second against per-replica capacity, allocated cost-aware.

Token capacity (policy ``token-capacity``)::

    need   = (prompt_tokens_per_s + output_tokens_per_s + backlog_tokens / drain_s) / utilization
    supply = sum over variants (ready + starting) x capacity_tokens_per_s

Starting replicas are supply: a burst already answered by replicas that are loading weights asks for nothing more.
The backlog term counts only while nothing is starting: a backlog grows during every cold start, and asking for
it again at each decision is exactly the cascade (measured: 16 replicas for a 5-replica load without this).
``allocate`` then moves from the current counts toward ``need``: while supply < need it adds a replica of the
variant with the lowest cost per unit of capacity (ties: name ascending); while supply exceeds need it removes
replicas of the highest cost per unit first, as long as supply stays >= need. Starting from the current counts
(not from zero) keeps a mixed pool as it is when the need does not change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lanterna.autoscale.types import PoolSnapshot, Recommendation, Variant, VariantState

Capacity = Callable[[Variant], float | None]


def allocate(states: Sequence[VariantState], need: float, capacity: Capacity) -> tuple[dict[str, int], str]:
    """Replicas per variant covering ``need`` units/s, cheapest capacity up first, most expensive down first."""
    caps = {s.name: capacity(s.variant) or 0.0 for s in states}
    counts = {s.name: min(max(s.num_current, s.variant.min_replicas), s.variant.max_replicas) for s in states}
    usable = [s for s in states if caps[s.name] > 0]
    if not usable:
        return counts, "no variant has a known capacity"
    supply = sum(counts[s.name] * caps[s.name] for s in usable)
    by_cost = sorted(usable, key=lambda s: (s.variant.cost_per_hour / caps[s.name], s.name))
    if supply < need:
        for s in by_cost:
            room = s.variant.max_replicas - counts[s.name]
            add = min(room, math.ceil((need - supply) / caps[s.name] - 1e-9))
            if add > 0:
                counts[s.name] += add
                supply += add * caps[s.name]
            if supply >= need:
                break
        why = f"need {need:.1f}/s > supply" if supply >= need else f"need {need:.1f}/s exceeds every maximum"
        return counts, why
    for s in reversed(by_cost):
        floor = s.variant.min_replicas
        drop = min(counts[s.name] - floor, math.floor((supply - need) / caps[s.name] + 1e-9))
        if drop > 0:
            counts[s.name] -= drop
            supply -= drop * caps[s.name]
    return counts, f"need {need:.1f}/s, supply {supply:.1f}/s"


@dataclass(frozen=True, slots=True)
class TokenCapacityPolicy:
    """Policy ``token-capacity``: token demand vs ``Variant.capacity_tokens_per_s`` (formula in the module doc).

    Args:
        utilization: the fraction of capacity to plan for (headroom for bursts between decisions).
        drain_s: a backlog (queued requests) must be served within this on top of the arrival rate.
    """

    utilization: float = 0.8
    drain_s: float = 30.0
    name: str = "token-capacity"

    def recommend(self, snap: PoolSnapshot) -> Recommendation:
        d = snap.demand
        backlog = 0.0 if snap.num_starting else snap.num_waiting * d.mean_tokens_per_request / self.drain_s
        need = (d.tokens_per_s + backlog) / self.utilization
        targets, why = allocate(snap.variants, need, lambda v: v.capacity_tokens_per_s)
        return Recommendation(targets, (f"tokens: {why} (demand {d.tokens_per_s:.0f} tok/s, "
                                        f"backlog {backlog:.0f} tok/s)",))
