"""Table-driven tests, one per picker plugin."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tests.unit.scheduler.helpers import ep, plugin, req

EPS = [ep("a"), ep("b"), ep("c"), ep("d")]


@pytest.mark.parametrize(
    ("scores", "k", "want"),
    [({"a": 1, "b": 3, "c": 2, "d": 0}, 4, ["b", "c", "a", "d"]), ({"a": 1, "b": 3, "c": 2, "d": 0}, 1, ["b"]),
     ({"a": 0.5, "b": 0.5, "c": 0, "d": 0}, 2, None)],
    ids=["ordered", "single", "tie"],
)
def test_max_score_picker(scores, k, want):
    p = plugin("max-score-picker", {"maxNumOfEndpoints": k})
    got = [e.id for e in p.pick(req("x"), scores, EPS, random.Random(0))]
    if want is None:
        assert set(got) == {"a", "b"}
    else:
        assert got == want


def test_max_score_tie_break_spreads_evenly():
    p = plugin("max-score-picker", {"maxNumOfEndpoints": 1})
    rng = random.Random(0)
    c = Counter(p.pick(req("x"), dict.fromkeys("abcd", 1.0), EPS, rng)[0].id for _ in range(4000))
    assert all(900 < v < 1100 for v in c.values())


@pytest.mark.parametrize(("k", "n"), [(1, 1), (4, 4), (10, 4)], ids=["one", "all", "more-than-candidates"])
def test_random_picker(k, n):
    got = plugin("random-picker", {"maxNumOfEndpoints": k}).pick(req("x"), {}, EPS, random.Random(0))
    assert len({e.id for e in got}) == n


@pytest.mark.parametrize(
    ("scores", "lo", "hi"),
    [({"a": 3, "b": 1, "c": 0, "d": 0}, {"a": 0.72, "b": 0.22}, {"a": 0.78, "b": 0.28}),
     ({"a": 0, "b": 0, "c": 0, "d": 0}, {"a": 0.2}, {"a": 0.3})],
    ids=["proportional", "all-zero-uniform"],
)
def test_weighted_random_picker(scores, lo, hi):
    p = plugin("weighted-random-picker", {"maxNumOfEndpoints": 1})
    rng = random.Random(0)
    c = Counter(p.pick(req("x"), scores, EPS, rng)[0].id for _ in range(4000))
    for k in lo:
        assert lo[k] < c[k] / 4000 < hi[k]
    if scores["c"] == 0 and scores["a"] > 0:
        assert c["c"] == 0 and c["d"] == 0


def test_round_robin_picker_orders_by_id_and_wraps():
    p = plugin("round-robin", {"maxNumOfEndpoints": 2})
    got = [[e.id for e in p.pick(req("x"), {}, list(reversed(EPS)), random.Random(0))] for _ in range(5)]
    assert got == [["a", "b"], ["b", "c"], ["c", "d"], ["d", "a"], ["a", "b"]]
