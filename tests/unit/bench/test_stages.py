"""The shared stage driver: ladder order, sweep rates, and the saturation rule (including the first rate)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from lanterna.bench.config import LoadConfig
from lanterna.bench.metrics import Latency, StageSummary, Stats, Throughput, summarize
from lanterna.bench.stages import StageDriver, SweepEnd

_BASE = summarize([])


def _summary(tps: float, ttft_p50: float | None = None) -> StageSummary:
    ttft = None if ttft_p50 is None else Stats(ttft_p50, ttft_p50, ttft_p50, ttft_p50, ttft_p50, ttft_p50, ttft_p50)
    return replace(_BASE, throughput=Throughput(0.0, tps, tps, 0.0), latency=Latency(ttft, None, None, None, None))


def _drive(load: dict[str, Any], results: list[StageSummary]) -> tuple[list[tuple[int, float | None]], StageDriver]:
    driver = StageDriver(LoadConfig.model_validate(load))
    fed = iter(results)
    plans, last = [], None
    while (plan := driver.next(last)) is not None:
        plans.append((plan.index, plan.stage.rate))
        last = next(fed, _summary(0.0))
    return plans, driver


def test_warmup_then_stages_then_sweep_rates_in_order() -> None:
    load = {"type": "poisson", "warmup": {"rate": 1, "num_requests": 2},
            "stages": [{"rate": 5, "num_requests": 3}, {"rate": 7, "num_requests": 3}],
            "sweep": {"start_rate": 1, "max_rate": 8, "factor": 2, "stage_duration_s": 1}}
    plans, driver = _drive(load, [_summary(0), _summary(1), _summary(1), *(_summary(10 * 2**i) for i in range(4))])
    assert plans == [(-1, 1), (0, 5), (1, 7), (2, 1), (3, 2), (4, 4), (5, 8)]
    assert driver.sweep_end is SweepEnd.MAX_RATE


def test_sweep_stops_when_throughput_stops_growing() -> None:
    sweep = {"start_rate": 2, "max_rate": 64, "factor": 2, "stage_duration_s": 1, "min_gain": 0.05}
    plans, driver = _drive({"sweep": sweep}, [_summary(100), _summary(190), _summary(195), _summary(300)])
    assert [r for _, r in plans] == [2, 4, 8]  # 195 < 190 * 1.05: the third rate saturated
    assert driver.sweep_end is SweepEnd.SATURATED


def test_ttft_cap_applies_from_the_first_sweep_rate() -> None:
    sweep = {"start_rate": 2, "max_rate": 64, "stage_duration_s": 1, "max_ttft_p50_s": 1.0}
    plans, driver = _drive({"sweep": sweep}, [_summary(100, ttft_p50=2.5)])
    assert plans == [(0, 2)] and driver.sweep_end is SweepEnd.SATURATED
    plans, _ = _drive({"sweep": sweep}, [_summary(100, 0.5), _summary(200, 0.9), _summary(400, 1.5)])
    assert [r for _, r in plans] == [2, 4, 8]


def test_configured_stages_never_stop_early_and_no_sweep_means_no_sweep_end() -> None:
    load = {"type": "concurrency", "stages": [{"concurrency": 2, "num_requests": 1}, {"concurrency": 4, "num_requests": 1}]}
    plans, driver = _drive(load, [_summary(100, 99.0), _summary(1, 99.0)])
    assert plans == [(0, None), (1, None)] and driver.sweep_end is None


def test_misuse_is_refused() -> None:
    driver = StageDriver(LoadConfig.model_validate({"stages": [{"rate": 1, "num_requests": 1}] * 2}))
    assert driver.next(None) is not None
    with pytest.raises(ValueError, match="summary"):
        driver.next(None)
    with pytest.raises(ValueError, match="trace"):
        StageDriver(LoadConfig.model_validate({"type": "trace"}))


def test_summary_json_keeps_the_report_keys_and_order() -> None:
    keys = list(_summary(1.0).to_json())
    assert keys == ["num_requests", "num_completed", "num_failed", "num_incomplete", "failures", "requested_rate",
                    "concurrency", "achieved_rate", "scheduled_rate", "schedule_lag_s", "behind_schedule",
                    "latency_s", "duration_s", "throughput", "tokens", "prefix_cache_hit_rate"]
