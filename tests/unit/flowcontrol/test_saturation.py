"""The pool saturation rule (WVA V1 thresholds) that the gateway and the virtual cluster share."""

from __future__ import annotations

import pytest

from lanterna.endpoints.types import Endpoint
from lanterna.flowcontrol import pool_saturated


def _ep(i: int, kv: float, waiting: int, scraped_at: float = 10.0, healthy: bool = True) -> Endpoint:
    ep = Endpoint(id=f"e{i}", address=f"10.0.0.{i}:8000", models=frozenset({"m"}))
    ep.healthy = healthy
    ep.metrics.kv_cache_usage, ep.metrics.num_waiting, ep.metrics.scraped_at = kv, waiting, scraped_at
    return ep


@pytest.mark.parametrize(("eps", "expected"), [
    ([_ep(0, 0.80, 0), _ep(1, 0.1, 5)], True),  # each at a threshold (>=)
    ([_ep(0, 0.80, 0), _ep(1, 0.79, 4)], False),  # one replica has room
    ([_ep(0, 0.9, 9), _ep(1, 0.1, 0, healthy=False)], True),  # unhealthy replicas do not count
    ([_ep(0, 0.9, 9, scraped_at=1.0)], False),  # stale metrics never hold requests back
    ([_ep(0, 0.9, 9, healthy=False)], False),  # no healthy replica is not saturation
    ([], False),
], ids=["thresholds", "room", "unhealthy", "stale", "none-healthy", "empty"])
def test_pool_saturated(eps: list[Endpoint], expected: bool) -> None:
    assert pool_saturated(eps, now=10.5, stale_after_s=2.0) is expected
