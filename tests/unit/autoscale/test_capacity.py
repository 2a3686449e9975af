"""Capacity policies: cost-aware allocation, token capacity and the model-based rate from the timing model."""

from __future__ import annotations

import math

import pytest

from lanterna.autoscale import (
    CurvePoint,
    Demand,
    LatencyTargets,
    ModelBasedPolicy,
    PoolSnapshot,
    ServingLimits,
    TokenCapacityPolicy,
    Variant,
    VariantState,
    WorkloadShape,
    allocate,
    max_rate_from_curve,
    max_sustainable_rate,
    operating_point,
)
from lanterna.sim import get_profile, make_timer
from lanterna.sim.timing import StepTimer

H100 = Variant("h100", cost_per_hour=4.0, accelerator="H100", max_replicas=8, max_rate_rps=2.0)  # 2.0/h per rps
A100 = Variant("a100", cost_per_hour=3.0, accelerator="A100", max_replicas=8, max_rate_rps=1.0)  # 3.0/h per rps


def _cap(v: Variant) -> float | None:
    return v.max_rate_rps


@pytest.mark.parametrize(("h", "a", "need", "want"), [
    (0, 0, 5.0, {"h100": 3, "a100": 0}),   # cheapest capacity (H100 per rps) first
    (8, 0, 19.0, {"h100": 8, "a100": 3}),  # H100 at its max: the rest on A100
    (4, 3, 6.0, {"h100": 3, "a100": 0}),   # too much: the A100s (dearest per rps) go first, then H100s
    (1, 3, 4.0, {"h100": 1, "a100": 2}),   # 5 rps for 4 needed: drop one A100, keep the H100
    (2, 2, 6.0, {"h100": 2, "a100": 2}),   # exactly covered: unchanged (no churn between variants)
], ids=["up-cheapest", "up-overflow", "down-dearest", "down-partial", "steady"])
def test_allocate_cheapest_capacity_up_most_expensive_down(h: int, a: int, need: float, want: dict[str, int]) -> None:
    got, _ = allocate([VariantState(H100, h), VariantState(A100, a)], need, _cap)
    assert got == want


def test_token_capacity_counts_starting_replicas_as_supply() -> None:
    v = Variant("v", capacity_tokens_per_s=1000.0, max_replicas=20)
    demand = Demand(arrival_rate_rps=3.0, prompt_tokens_per_s=2400.0, output_tokens_per_s=800.0)
    pol = TokenCapacityPolicy(utilization=0.8, drain_s=30)
    assert pol.recommend(PoolSnapshot(0, (VariantState(v, 1),), demand=demand)).targets == {"v": 4}
    # 2 ready + 2 starting already cover 3200 / 0.8 tok/s: nothing more while they load
    assert pol.recommend(PoolSnapshot(0, (VariantState(v, 2, 2),), demand=demand)).targets == {"v": 4}
    # a backlog of 30 requests (~1067 tokens each) over 30 s adds 1067 tok/s of demand
    backlog = Demand(3.0, 2400.0, 800.0, num_queued=30)
    assert pol.recommend(PoolSnapshot(0, (VariantState(v, 4),), demand=backlog)).targets == {"v": 6}


def test_model_based_replicas_is_ceil_rate_over_sustainable_rate() -> None:
    v = Variant("v", max_rate_rps=1.5, max_replicas=50)
    pol = ModelBasedPolicy(headroom=1.0, drain_s=30)
    for rate in (0.0, 1.0, 1.5, 1.6, 10.0):
        snap = PoolSnapshot(0, (VariantState(v, 1),), demand=Demand(arrival_rate_rps=rate))
        assert pol.recommend(snap).targets == {"v": math.ceil(rate / 1.5)}


def _physics() -> tuple[StepTimer, ServingLimits]:
    p = get_profile("qwen3-32b-tp2-h100")
    return make_timer("physics", p.name), ServingLimits(kv_cache_tokens=p.num_gpu_blocks(16) * 16)


def test_sustainable_rate_from_the_timing_model_tracks_targets_and_shape() -> None:
    timer, lim = _physics()
    shape = WorkloadShape(2000, 400)
    strict = max_sustainable_rate(timer, shape, lim, LatencyTargets(ttft_s=0.5, itl_s=0.03))
    loose = max_sustainable_rate(timer, shape, lim, LatencyTargets(ttft_s=2.0, itl_s=0.06))
    assert 0 < strict.rate_rps < loose.rate_rps and strict.feasible and loose.feasible
    assert strict.itl_s <= 0.03 and strict.ttft_s <= 0.5
    # just above the answer a target is missed: the bisection found the edge
    above = operating_point(timer, shape, lim, strict.rate_rps * 1.02,
                            LatencyTargets(ttft_s=0.5, itl_s=0.03))
    assert not above.feasible
    cached = max_sustainable_rate(timer, WorkloadShape(2000, 400, 0.9), lim,
                                  LatencyTargets(ttft_s=0.5, itl_s=0.03))
    assert cached.rate_rps > strict.rate_rps  # prefix hits are cheaper prefills
    impossible = max_sustainable_rate(timer, shape, lim, LatencyTargets(ttft_s=1e-4, itl_s=1e-4))
    assert impossible.rate_rps == 0.0 and not impossible.feasible


def test_max_rate_from_measured_curve_interpolates_to_the_first_miss() -> None:
    pts = [CurvePoint(1, 0.2, 0.02), CurvePoint(2, 0.3, 0.025), CurvePoint(4, 1.3, 0.035), CurvePoint(8, 9, 0.08)]
    # TTFT crosses 0.8 halfway between 2 and 4 rps; ITL 0.03 too: the earlier crossing wins
    assert max_rate_from_curve(pts, LatencyTargets(0.8, 0.03)) == pytest.approx(3.0)
    assert max_rate_from_curve(pts, LatencyTargets(0.8, 1.0)) == pytest.approx(3.0)
    assert max_rate_from_curve(pts, LatencyTargets(10, 1.0)) == 8
    assert max_rate_from_curve(pts, LatencyTargets(0.1, 1.0)) == 0.0
