"""WVA's documented saturation examples (docs/saturation-analyzer.md, docs/saturation-scaling-config.md)."""

from __future__ import annotations

import pytest

from lanterna.autoscale import (
    Demand,
    PoolSnapshot,
    ReplicaMetrics,
    SaturationPolicy,
    Variant,
    VariantState,
    analyze,
    capacity_targets,
)


def _r(i: int, kv: float, q: int = 0, variant: str = "v") -> ReplicaMetrics:
    return ReplicaMetrics(f"r{i}", variant, kv, q)


@pytest.mark.parametrize(("kv_b", "up"), [(0.72, False), (0.75, True)], ids=["spare-0.115-no", "spare-0.10-up"])
def test_spare_trigger_example(kv_b: float, up: bool) -> None:
    # A at 65 %, B at 72 %: spare (0.15 + 0.08) / 2 = 0.115 > 0.10, no scale-up; B at 75 %: 0.10 -> triggered
    a = analyze([_r(0, 0.65, 0), _r(1, kv_b, 0)])
    assert a.num_non_saturated == 2 and a.should_scale_up is up
    assert a.avg_spare_kv == pytest.approx(0.115 if not up else 0.10)


def test_multi_variant_example_aggregates_all_replicas() -> None:
    # variant-1 (A100, cost 20): (0.70, 2), (0.75, 3); variant-2 (H100, cost 15): (0.60, 1), (0.65, 2), (0.55, 1)
    reps = [_r(0, 0.70, 2, "variant-1"), _r(1, 0.75, 3, "variant-1"),
            _r(2, 0.60, 1, "variant-2"), _r(3, 0.65, 2, "variant-2"), _r(4, 0.55, 1, "variant-2")]
    a = analyze(reps)
    assert (a.num_replicas, a.num_non_saturated) == (5, 5)
    assert a.avg_spare_kv == pytest.approx(0.15) and a.avg_spare_queue == pytest.approx(3.2)
    assert not a.should_scale_up and not a.scale_down_safe  # 3.25 KV over 4 replicas = 0.8125 > 0.80
    v1 = VariantState(Variant("variant-1", 20, "A100"), 2)
    v2 = VariantState(Variant("variant-2", 15, "H100"), 3)
    # "if capacity needs scale-up: variant-2 (H100) will be scaled up; if it allows scale-down: variant-1 (A100)"
    up = capacity_targets(a.__class__(5, 5, 0.05, 3, True, False, "up"), [v1, v2]).targets
    down = capacity_targets(a.__class__(5, 5, 0.3, 4, False, True, "down"), [v1, v2]).targets
    assert up == {"variant-1": 2, "variant-2": 4} and down == {"variant-1": 1, "variant-2": 3}


def test_log_example_queue_spare_low_triggers_scale_up() -> None:
    # totalReplicas=5 nonSaturated=4 avgSpareKv=0.150 avgSpareQueue=2.5 -> shouldScaleUp=true, scaleDownSafe=false
    reps = [_r(0, 0.65, 2), _r(1, 0.65, 3), _r(2, 0.65, 2), _r(3, 0.65, 3), _r(4, 0.90, 0)]
    a = analyze(reps)
    assert (a.num_replicas, a.num_non_saturated) == (5, 4)
    assert a.avg_spare_kv == pytest.approx(0.15) and a.avg_spare_queue == pytest.approx(2.5)
    assert a.should_scale_up and not a.scale_down_safe and "queue" in a.reason


def test_scale_down_unsafe_example() -> None:
    # remainingSpareKv=0.050 < 0.10 and remainingSpareQueue=1.0 < 3 after spreading over N-1
    a = analyze([_r(0, 0.5, 3), _r(1, 0.5, 3), _r(2, 0.5, 2)])
    assert a.remaining_spare_kv == pytest.approx(0.05) and a.remaining_spare_queue == pytest.approx(1.0)
    assert not a.scale_down_safe
    assert a.should_scale_up  # avg spare queue 5 - 8/3 < 3: a queue this deep asks for more, not less


def test_scale_down_safe_and_needs_two_non_saturated() -> None:
    assert analyze([_r(0, 0.1), _r(1, 0.1), _r(2, 0.1)]).scale_down_safe
    assert not analyze([_r(0, 0.1)]).scale_down_safe  # N_non_sat >= 2
    assert not analyze([_r(0, 0.1), _r(1, 0.95)]).scale_down_safe


def test_capacity_targets_example_cheapest_up_and_pending_is_supply() -> None:
    # v1-l4 (cost 5): current 2, ready 2, desired 0 -> 3; v2-a100 (cost 20): current 4, ready 3 -> 4
    a = analyze([_r(0, 0.78, 0, "v1-l4"), _r(1, 0.76, 0, "v1-l4")] + [_r(2 + i, 0.75, 1, "v2-a100") for i in range(3)])
    assert a.should_scale_up
    l4 = VariantState(Variant("v1-l4", 5, "L4"), num_ready=2)
    a100 = VariantState(Variant("v2-a100", 20, "A100"), num_ready=3, num_starting=1, desired=4)
    assert capacity_targets(a, [l4, a100]).targets == {"v1-l4": 3, "v2-a100": 4}


def test_cascade_prevention_skips_variants_with_pending_replicas() -> None:
    a = analyze([_r(0, 0.79), _r(1, 0.79)])
    v1 = VariantState(Variant("variant-1", 10), num_ready=2, num_starting=1)  # T+30s: its pod still loading
    v2 = VariantState(Variant("variant-2", 12), num_ready=0)
    assert capacity_targets(a, [v1, v2]).targets == {"variant-1": 3, "variant-2": 1}
    rec = capacity_targets(a, [v1])
    assert rec.targets == {"variant-1": 3} and any("cascade" in r for r in rec.reasons)


def test_equal_costs_break_ties_by_name() -> None:
    up = analyze([_r(0, 0.79), _r(1, 0.79)])
    down = analyze([_r(0, 0.0), _r(1, 0.0), _r(2, 0.0)])
    states = [VariantState(Variant("b", 10), 2), VariantState(Variant("a", 10), 1)]
    assert capacity_targets(up, states).targets == {"b": 2, "a": 2}  # alphabetically first up
    assert capacity_targets(down, states).targets == {"b": 1, "a": 1}  # alphabetically last down


def test_never_below_one_replica_and_no_scale_up_without_load() -> None:
    idle = analyze([_r(0, 0.0), _r(1, 0.0)])
    assert not idle.should_scale_up and idle.scale_down_safe
    assert capacity_targets(idle, [VariantState(Variant("v"), 2)]).targets == {"v": 1}
    one = VariantState(Variant("v"), 1)
    assert capacity_targets(analyze([_r(0, 0.0)]), [one]).targets == {"v": 1}
    assert not analyze([]).should_scale_up  # nothing reports metrics: no evidence of load


def test_stuck_replica_blocks_scale_down_that_wva_alone_would_allow() -> None:
    # one replica broken with a full queue, two idle: WVA V1 sees 2 non-saturated and would remove one
    reps = (_r(0, 0.0, 0), _r(1, 0.0, 0), _r(2, 0.3, 20))
    assert analyze(reps).scale_down_safe
    snap = PoolSnapshot(0.0, (VariantState(Variant("v"), 3),), reps)
    rec = SaturationPolicy().recommend(snap)
    assert rec.targets == {"v": 3} and any("held" in r for r in rec.reasons)
    queued = PoolSnapshot(0.0, (VariantState(Variant("v"), 3),), reps[:2], Demand(num_queued=4))
    assert SaturationPolicy().recommend(queued).targets == {"v": 3}
