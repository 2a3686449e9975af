"""The pool saturation rule (WVA V1 defaults, PROTOCOLS.md section 7), pure so the gateway and the virtual-time
cluster hold requests back on exactly the same condition.

A replica is saturated at KV-cache usage >= 0.80 or >= 5 waiting requests; the pool is saturated when every
healthy replica is, judged on fresh metrics only (a stale view says "not saturated": never hold requests back on
guesses). No healthy replica at all is not saturation either (that is a routing failure, not a queueing one).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

SATURATION_KV_USAGE = 0.80
SATURATION_WAITING = 5


class ReplicaMetrics(Protocol):
    @property
    def kv_cache_usage(self) -> float: ...
    @property
    def num_waiting(self) -> int: ...
    @property
    def scraped_at(self) -> float: ...


class Replica(Protocol):
    """What the rule reads of an endpoint (``lanterna.endpoints.types.Endpoint`` satisfies it)."""

    @property
    def healthy(self) -> bool: ...
    @property
    def metrics(self) -> ReplicaMetrics: ...


def pool_saturated(replicas: Iterable[Replica], now: float, stale_after_s: float) -> bool:
    """True when every healthy replica is saturated, from metrics no older than ``stale_after_s``."""
    seen = False
    for ep in replicas:
        if not ep.healthy:
            continue
        m = ep.metrics
        if now - m.scraped_at > stale_after_s:
            return False
        seen = True
        if m.kv_cache_usage < SATURATION_KV_USAGE and m.num_waiting < SATURATION_WAITING:
            return False
    return seen
