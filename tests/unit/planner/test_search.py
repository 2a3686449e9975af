"""The sizing search with a deterministic evaluator (a Protocol-shaped callable, no simulation)."""

from __future__ import annotations

import pytest
import yaml

from lanterna.planner.deploy import Deployment
from lanterna.planner.search import Candidate, Outcome, Shape, Slo, search


def test_slo_parse_and_met() -> None:
    slo = Slo.parse("ttft_p90=2, tpot_p90=50ms")
    assert (slo.ttft_p90_s, slo.tpot_p90_s) == (2.0, 0.05)
    assert slo.met(1.9, 0.05) and not slo.met(2.1, 0.01) and not slo.met(None, 0.01)
    for bad in ("", "ttft=1", "ttft_p90=-1", "tpot_p90"):
        with pytest.raises(ValueError):
            Slo.parse(bad)


def _latency_model(need: dict[int, int]) -> tuple[list[Candidate], object]:
    """Meets the SLO from ``need[tp]`` replicas up; records every call."""
    calls: list[Candidate] = []

    def evaluate(c: Candidate) -> Outcome:
        calls.append(c)
        ok = c.replicas >= need[c.shape.tp]
        return Outcome(c, True, 0.5 if ok else 5.0, 0.02, 1000.0 * c.replicas, 0, ok)

    return calls, evaluate


def test_search_finds_minimal_replicas_with_few_simulations() -> None:
    calls, evaluate = _latency_model({1: 11, 2: 3})
    res = search([Shape(tp=1), Shape(tp=2)], evaluate)  # type: ignore[arg-type]
    tp1 = sorted(c.replicas for c in calls if c.shape.tp == 1)
    assert tp1 == [1, 2, 4, 8, 10, 11, 12, 16]  # doubling to 16, then bisection 8..16
    assert res.best is not None and res.best.candidate == Candidate(Shape(tp=2), 3)  # 6 GPUs < 11
    assert len(calls) <= 2 * 4 + 2 * 2 + 2


def test_search_respects_gpu_budget_and_reports_none() -> None:
    _, evaluate = _latency_model({4: 9})
    res = search([Shape(tp=4)], evaluate, max_gpus=16)  # type: ignore[arg-type]
    assert res.best is None and max(o.candidate.num_gpus for o in res.outcomes) <= 16


def test_pareto_front_drops_dominated_points() -> None:
    s = Shape()
    outs = [Outcome(Candidate(s, 1), True, 1.0, None, 300.0), Outcome(Candidate(s, 2), True, 0.5, None, 500.0),
            Outcome(Candidate(s, 4), True, 0.4, None, 400.0), Outcome(Candidate(s, 8), True, 2.0, None, 100.0)]
    from lanterna.planner.search import SearchResult

    front = SearchResult(outs).pareto(lambda o: o.ttft_p90_s)
    # per-GPU throughput: 300, 250, 100, 12.5; r=8 is dominated by r=1 (slower and less per GPU)
    assert [o.candidate.replicas for o in front] == [4, 2, 1]


def test_deployment_renders_vllm_and_helm_values() -> None:
    dep = Deployment("meta-llama/Llama-3.1-70B-Instruct", Candidate(Shape(tp=4, prefill_share=0.25), 4))
    assert dep.num_prefill == 1
    assert all("--tensor-parallel-size 4" in c for c in dep.vllm_commands()) and len(dep.vllm_commands()) == 4
    assert dep.lanterna_up().count("--endpoint") == 4
    values = yaml.safe_load(dep.helm_values())
    assert values["decode"]["replicas"] == 3 and values["prefill"]["replicas"] == 1
    assert values["decode"]["parallelism"] == {"tensor": 4}
    ep = Deployment("deepseek-ai/DeepSeek-V3", Candidate(Shape(tp=1, ep=True), 16))
    assert "--enable-expert-parallel" in ep.vllm_args() and yaml.safe_load(ep.helm_values())["decode"]["parallelism"] == {
        "tensor": 1, "data": 16}


def test_deploy_render_line_matches_the_shape() -> None:
    agg = Deployment("meta-llama/Llama-3.1-8B-Instruct", Candidate(Shape(tp=1, cpu_offload_gib=64), 3))
    assert agg.deploy_render() == ("lanterna deploy render --model meta-llama/Llama-3.1-8B-Instruct "
                                   "--vllm-replicas 3 --cpu-offload-gib 64")
    pd = Deployment("m", Candidate(Shape(tp=2, prefill_share=0.5), 4)).deploy_render()
    assert "--vllm-replicas 2 --pd --prefill-replicas 2" in pd and "--tensor-parallel-size 2" in pd
    ep = Deployment("deepseek-ai/DeepSeek-V3", Candidate(Shape(tp=1, ep=True), 8)).deploy_render()
    assert "--vllm-replicas 1" in ep and "8 GPUs" in ep and "--data-parallel-size 8" in ep
