"""Watermark hysteresis and the bounded oldest-k set."""

from __future__ import annotations

import random

import pytest

from lanterna.offload.evict_policy import Candidate, OldestCandidates, Watermarks, pick_victims


@pytest.mark.parametrize(("used", "cap", "need"), [
    (840, 1000, 0), (850, 1000, 150), (1000, 1000, 300), (0, 0, 0),
], ids=["below-high", "at-high", "full", "no-capacity"])
def test_bytes_to_free(used: int, cap: int, need: int) -> None:
    assert Watermarks(0.85, 0.70).bytes_to_free(used, cap) == need


@pytest.mark.parametrize(("high", "low"), [(0.7, 0.85), (0.5, 0.5), (1.1, 0.5), (0.8, 0.0)])
def test_bad_watermarks(high: float, low: float) -> None:
    with pytest.raises(ValueError):
        Watermarks(high, low)


def test_oldest_candidates_keeps_k_oldest_in_order() -> None:
    rng = random.Random(7)
    items = [Candidate(rng.randrange(10**9), 1, f"f{i}") for i in range(5000)]
    heap = OldestCandidates(50)
    for c in items:
        heap.offer(c)
        assert len(heap) <= 50
    got = heap.oldest_first()
    assert [c.recency_ns for c in got] == sorted(c.recency_ns for c in items)[:50]
    assert len(heap) == 0


def test_pick_victims_stops_once_enough() -> None:
    cs = [Candidate(i, 10, str(i)) for i in range(5)]
    assert [c.path for c in pick_victims(cs, 25)] == ["0", "1", "2"]
    assert pick_victims(cs, 0) == []
    assert len(pick_victims(cs, 10**6)) == 5
