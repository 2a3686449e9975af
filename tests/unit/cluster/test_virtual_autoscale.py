"""The autoscaler in the virtual cluster's loop: cold starts, scale to zero and back, drains that lose nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lanterna.bench.config import parse_config
from lanterna.cluster.virtual import VirtualCluster


def _trace(path: Path, bursts: list[tuple[float, int, float]]) -> Path:
    """Mooncake JSONL: per burst (start s, requests, rate/s) of 512-token prompts and 64-token answers."""
    rows: list[dict[str, Any]] = []
    for start, n, rate in bursts:
        rows += [{"timestamp": int((start + k / rate) * 1000), "input_length": 512, "output_length": 64,
                  "hash_ids": [len(rows) + k]} for k in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _cfg(trace: Path, autoscale: dict[str, Any], ttl: float = 120.0) -> Any:
    return parse_config({
        "seed": 3,
        "workload": {"type": "trace", "path": str(trace), "block_tokens": 512},
        "load": {"type": "trace"},
        "cluster": {"replicas": 1, "profile": "llama-3.1-8b-h100", "max_num_seqs": 16,
                    "flow_control": {"queue_ttl_s": ttl}, "autoscale": autoscale},
    })


def test_scale_to_zero_in_a_gap_and_cold_start_from_zero_loses_nothing(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.jsonl", [(0.0, 40, 4.0), (400.0, 40, 4.0)])
    vc = VirtualCluster(_cfg(trace, {"policy": "saturation", "initial_replicas": 0, "scale_to_zero": True,
                                     "retention_s": 60, "cold_start_s": 25, "interval_s": 5}))
    res = vc.run()
    recs = res.stages[0].records
    assert len(recs) == 80 and all(r.error is None for r in recs)  # nothing dropped: the queue held them
    first = min(recs, key=lambda r: r.send_s)
    assert first.ttft_s is not None and 25.0 <= first.ttft_s < 25.0 + 5 + 1  # waited for the cold start
    tl = res.extra["autoscale"]["timeline"]
    between = [row for row in tl if 100.0 <= row[0] <= 395.0]
    assert between and all(row[1] + row[2] + row[3] == 0 for row in between)  # scaled to zero in the gap
    second = [r for r in recs if r.send_s >= 400.0]
    first2 = min(second, key=lambda r: r.send_s)
    assert first2.ttft_s is not None and first2.ttft_s >= 25.0  # the second burst found the pool at zero again
    a = res.extra["autoscale"]
    assert a["num_replicas_created"] == 2  # one deduplicated scale-from-zero per burst, not one per request
    assert 0 < a["replica_seconds"] < res.extra["virtual_time_s"]
    assert vc.flow is not None and vc.flow.num_queued == 0 and vc.flow.in_flight == 0


def test_queue_ttl_bounds_the_wait_at_zero_with_503_reason(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.jsonl", [(0.0, 5, 5.0)])
    res = VirtualCluster(_cfg(trace, {"policy": "saturation", "initial_replicas": 0, "scale_to_zero": True,
                                      "cold_start_s": 60, "interval_s": 5}, ttl=10.0)).run()
    errors = {r.error for r in res.stages[0].records}
    assert errors == {"rejected_ttl_expired"}  # a TTL shorter than the cold start: 503s, counted, not lost


@pytest.mark.parametrize("policy", ["saturation", "model-based", "token-capacity"])
def test_burst_scales_up_then_drains_down_without_losing_requests(tmp_path: Path, policy: str) -> None:
    trace = _trace(tmp_path / "t.jsonl", [(0.0, 30, 1.0), (30.0, 900, 30.0), (60.0, 60, 1.0)])
    res = VirtualCluster(_cfg(trace, {"policy": policy, "initial_replicas": 1, "min_replicas": 1,
                                      "max_replicas": 8, "cold_start_s": 10, "interval_s": 5,
                                      "scale_down_window_s": 20, "scale_down_delay_after_up_s": 0,
                                      "ttft_s": 1.0, "itl_s": 0.03})).run()
    recs = res.stages[0].records
    assert all(r.error is None for r in recs) and len(recs) == 990
    a = res.extra["autoscale"]
    assert a["max_replicas_seen"] >= 2 and a["num_scale_ups"] >= 1
    assert a["timeline"][-1][1] + a["timeline"][-1][2] < a["max_replicas_seen"]  # came back down after the burst


def test_first_tick_does_not_read_one_request_as_a_huge_rate(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "t.jsonl", [(0.0, 3, 1.0)])
    res = VirtualCluster(_cfg(trace, {"policy": "model-based", "initial_replicas": 0, "scale_to_zero": True,
                                      "cold_start_s": 10, "interval_s": 5})).run()
    a = res.extra["autoscale"]
    assert a["num_replicas_created"] == 1 and all(row[6] < 1.0 for row in a["timeline"])
