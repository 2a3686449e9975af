"""The virtual P/D cluster: the production P/D scheduler with simulated engines and the sim's link timing."""

from __future__ import annotations

from typing import Any

import pytest

from lanterna.bench.config import BenchConfig
from lanterna.cluster.virtual import run_virtual


def _cfg(pd: dict[str, Any] | None, *, policy: str = "pd", workload: dict[str, Any] | None = None,
         n: int = 40) -> BenchConfig:
    c: dict[str, Any] = {
        "name": "pd", "seed": 3,
        "workload": workload or {"type": "random", "input_len": 2000, "output_len": 100, "num_prompts": n},
        "load": {"type": "poisson", "stages": [{"rate": 4.0, "num_requests": n}]},
        "cluster": {"replicas": 3, "profile": "qwen3-32b-tp2-h100", "policy": policy}}
    if pd is not None:
        c["cluster"]["pd"] = pd
    return BenchConfig.model_validate(c)


def test_every_request_is_prefilled_remotely_and_decoded_on_a_decode_replica() -> None:
    r = run_virtual(_cfg({"prefill_replicas": 1, "threshold": 0}))
    s = r.stages[0].summary
    assert s.num_completed == 40 and s.num_failed == 0
    assert r.extra["pd"]["num_prefill_decode"] == 40 and r.extra["pd"]["disagg_share"] == 1.0
    prefill_ep = "10.0.0.1:8000"
    assert r.extra["routed"][f"{prefill_ep} (prefill)"] == 40
    assert prefill_ep not in r.extra["routed"]  # never serves a decode
    recs = r.stages[0].records
    assert all(rec.cached_tokens == rec.prompt_tokens - 1 for rec in recs)  # the pulled KV counts as cached
    assert all(rec.output_tokens == 100 for rec in recs)


def test_transfer_time_is_part_of_ttft() -> None:
    fast = run_virtual(_cfg({"prefill_replicas": 1, "threshold": 0, "link": "nvlink"}))
    slow = run_virtual(_cfg({"prefill_replicas": 1, "threshold": 0, "link": "tcp", "link_bandwidth_gbps": 0.5}))
    f, s = (r.stages[0].summary.latency.to_json()["ttft"]["p50"] for r in (fast, slow))
    xfer = slow.extra["pd"]["mean_transfer_s"]
    assert xfer == pytest.approx(5e-3 + 2000 * _kv_bytes() / 0.5e9, rel=0.25)  # prompts are ~2000 tokens
    assert s - f > 0.5 * xfer


def test_threshold_keeps_cached_prompts_decode_only() -> None:
    shared = {"type": "shared-prefix", "num_groups": 2, "prompts_per_group": 20, "system_len": 1600,
              "question_len": 200, "output_len": 50}
    r = run_virtual(_cfg({"prefill_replicas": 1, "threshold": 800}, workload=shared))
    pd = r.extra["pd"]
    assert r.stages[0].summary.num_completed == 40
    assert 0 < pd["num_prefill_decode"] < 40  # the first prompts of each group disaggregate, later ones hit cache
    assert pd["num_decode_only"] == 40 - pd["num_prefill_decode"]


def test_prefill_replicas_must_leave_a_decoder() -> None:
    with pytest.raises(ValueError, match="at least one decode replica"):
        run_virtual(_cfg({"prefill_replicas": 3}))


def _kv_bytes() -> int:
    from lanterna.sim.profiles import get_profile

    return get_profile("qwen3-32b-tp2-h100").kv_bytes_per_token
