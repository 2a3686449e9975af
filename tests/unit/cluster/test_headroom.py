"""The achievable bound (``cluster.headroom``): per-request TTFT and work on hand-built items, the stage's shares
on hand-computed numbers, and a virtual-cluster run that never beats its own bound."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lanterna.bench.config import parse_config
from lanterna.bench.report import load_records, load_report, write_report
from lanterna.bench.workloads import Segment, WorkItem
from lanterna.cluster.headroom import HeadroomModel, RequestBound, report_headroom, stage_headroom
from lanterna.cluster.slo import ttft_bounds
from lanterna.cluster.virtual import run_virtual
from lanterna.sim.profiles import get_profile
from lanterna.sim.timing import BatchShape, PhysicsTimer

PROFILE = "qwen3-32b-tp2-h100"


def _seg(key: str, n: int) -> Segment:
    return Segment(key, np.zeros(n, dtype=np.int32))


def _item(i: int, *segs: Segment, out: int = 3) -> WorkItem:
    return WorkItem(i, segs, out)


def test_request_bound_hits_every_seen_prefix_and_never_waits() -> None:
    timer = PhysicsTimer(get_profile(PROFILE))
    sys, budget = _seg("sys", 1000), 512
    m = HeadroomModel(PROFILE, budget=budget, max_seqs=4)
    first = m.add(_item(0, sys, _seg("q0", 100)))  # cold: 1100 tokens in chunks of 512, 512, 76
    want = (timer.step_time(BatchShape([(512, 0)], num_prefill_sampled=0))
            + timer.step_time(BatchShape([(512, 512)], num_prefill_sampled=0))
            + timer.step_time(BatchShape([(76, 1024)], num_prefill_sampled=1)))
    assert first.ttft_s == pytest.approx(want)
    second = m.add(_item(1, sys, _seg("q1", 100)))  # system prompt hit: only its question, over 1000 of context
    assert second.ttft_s == pytest.approx(timer.step_time(BatchShape([(100, 1000)], num_prefill_sampled=1)))
    again = m.add(_item(2, sys, _seg("q1", 100)))  # full hit: vLLM recomputes the last token
    assert again.ttft_s == pytest.approx(timer.step_time(BatchShape([(1, 1099)], num_prefill_sampled=1)))
    other = m.add(_item(3, _seg("q1", 100)))  # a seen segment that is not a prefix does not hit
    assert other.ttft_s == pytest.approx(timer.step_time(BatchShape([(100, 0)], num_prefill_sampled=1)))
    # work: (uncached + decodes) tokens at the full-budget per-token cost, 3 lm_head rows at 4 rows a step,
    # one-chunk prefill attention, decode KV reads over 1100 and 1101 tokens of context
    p = get_profile(PROFILE)
    work = ((100 + 2) * (p.overhead_s + p.linear_s(budget) + p.allreduce_s(budget)) / budget
            + 3 * p.lm_head_s(4) / 4 + p.prefill_attn_s(100, 1000)
            + (1100 + 1101) * p.kv_bytes_per_token / (p.hbm_bandwidth_bps * p.dc_attn_bw_eff))
    assert second.work_s == pytest.approx(work) and second.output_tokens == 3
    alone = [(p.overhead_s + p.linear_s(1) + p.lm_head_s(1) + p.allreduce_s(1) + p.num_layers * p.dc_attn_layer_s
              + 1100 * p.kv_bytes_per_token / (p.hbm_bandwidth_bps * p.dc_attn_bw_eff))] * 2
    assert second.e2e_s == pytest.approx(second.ttft_s + sum(alone))
    assert ttft_bounds([_item(0, sys, _seg("q0", 100))], PROFILE, budget) == [pytest.approx(first.ttft_s)]


def test_stage_shares_on_hand_numbers() -> None:
    bounds = [RequestBound(float(t), 1.0, 10) for t in (1, 2, 3, 4)]  # P90 by linear interpolation: 3.7
    h = stage_headroom(bounds, {"mean": 5.0, "p50": 5.0, "p90": 7.4, "p99": 8.0}, 10.0, 1.0, 2)
    assert h is not None
    assert h["ttft_p90_bound_s"] == pytest.approx(3.7) and h["share_p90"] == pytest.approx(0.5)
    assert h["share_mean"] == pytest.approx(2.5 / 5) and h["share_p50"] == pytest.approx(2.5 / 5)
    # 4 s of work over 2 replicas: 2 s for 40 output tokens, 20 tok/s; measured 10 -> half
    assert h["output_tok_s_bound"] == pytest.approx(20.0) and h["throughput_share"] == pytest.approx(0.5)
    # an open-loop stage whose arrivals span 7 s, the last served in 1 s at best, cannot beat 40 / 8 tok/s
    bounds[-1] = RequestBound(4.0, 1.0, 10, e2e_s=1.0)
    slow = stage_headroom(bounds, None, 4.0, 7.0, 2)
    assert slow is not None and slow["output_tok_s_bound"] == pytest.approx(5.0) and slow["share_p90"] is None
    no_tp = stage_headroom(bounds, None, 4.0, 8.0, None)
    assert no_tp is not None and "output_tok_s_bound" not in no_tp
    assert stage_headroom([], None, None, None, 2) is None


def _cfg(policy: str) -> Any:
    return parse_config({
        "seed": 3, "workload": {"type": "shared-prefix", "num_groups": 6, "prompts_per_group": 4, "system_len": 512,
                                "question_len": 64, "output_len": 16},
        "load": {"type": "poisson", "warmup": {"rate": 5, "num_requests": 5},
                 "stages": [{"rate": 4, "num_requests": 20}, {"rate": 40, "num_requests": 30}]},
        "cluster": {"replicas": 3, "policy": policy, "profile": PROFILE, "num_gpu_blocks": 2000}})


@pytest.mark.parametrize("policy", ["round-robin", "precise"])
def test_virtual_run_reports_headroom_it_cannot_beat(policy: str, tmp_path: Any) -> None:
    res = run_virtual(_cfg(policy))
    for st in res.stages:
        h = st.summary.headroom
        assert h is not None
        assert 0 < h["share_p90"] <= 1 + 1e-9 and 0 < h["share_mean"] <= 1 + 1e-9
        assert 0 < h["throughput_share"] <= 1 + 1e-9
    # a saved report gives the same numbers back from its config and records
    write_report(res, tmp_path)
    rep = load_report(tmp_path)
    assert rep["stages"][0]["headroom"] == res.stages[0].summary.headroom
    again = report_headroom(rep, load_records(tmp_path))
    for st, h in zip(res.stages, again, strict=True):
        assert h == pytest.approx(st.summary.headroom)
