"""``observe_many`` must leave a histogram exactly as ``count`` calls to ``observe`` would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from lanterna.sim.metrics import observe_many

BUCKETS = (0.01, 0.025, 0.05, 0.1)


@pytest.mark.parametrize("values", [[(0.0, 3)], [(0.01, 2), (0.0100001, 5)], [(0.05, 1), (7.0, 4), (0.02, 200)]])
def test_observe_many_equals_repeated_observe(values: list[tuple[float, int]]) -> None:
    r_one, r_many = CollectorRegistry(), CollectorRegistry()
    one = Histogram("h", "h", ["m"], buckets=BUCKETS, registry=r_one).labels(m="x")
    many = Histogram("h", "h", ["m"], buckets=BUCKETS, registry=r_many).labels(m="x")
    for v, n in values:
        for _ in range(n):
            one.observe(v)
        observe_many(many, v, n)
    for le in [*map(str, BUCKETS), "+Inf"]:
        lab = {"m": "x", "le": le}
        assert r_many.get_sample_value("h_bucket", lab) == r_one.get_sample_value("h_bucket", lab), le
    assert r_many.get_sample_value("h_count", {"m": "x"}) == sum(n for _, n in values)
    assert r_many.get_sample_value("h_sum", {"m": "x"}) == pytest.approx(r_one.get_sample_value("h_sum", {"m": "x"}))


def test_observe_many_falls_back_without_internals() -> None:
    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, v: float) -> None:
            self.seen.append(v)

    p = Plain()
    observe_many(p, 0.5, 3)
    assert p.seen == [0.5, 0.5, 0.5]
