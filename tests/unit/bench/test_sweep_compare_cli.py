"""Sweeps (treatments, Pareto front), compare tables, plots, and the CLI's fail-before-load behaviour."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from lanterna.bench.compare import compare_rows, markdown_table
from lanterna.bench.config import BenchConfig
from lanterna.bench.plots import plot_runs
from lanterna.bench.report import build_report
from lanterna.bench.sweep import Experiment, load_experiment, pareto_front, run_sweep, set_path, treatments
from lanterna.cli.main import main
from lanterna.cluster.virtual import run_virtual

SMALL = """
name: small
seed: 3
workload: {type: shared-prefix, num_groups: 4, prompts_per_group: 2, system_len: 256, question_len: 32, output_len: 8}
load: {type: poisson, stages: [{rate: 4, num_requests: 12}, {rate: 8, num_requests: 12}]}
cluster: {replicas: 2, num_gpu_blocks: 1000}
"""


def test_set_path_indexes_lists() -> None:
    d: dict[str, Any] = {"load": {"stages": [{"rate": 1}, {"rate": 2}]}}
    set_path(d, "load.stages.1.rate", 9)
    set_path(d, "cluster.policy", "x")
    assert d == {"load": {"stages": [{"rate": 1}, {"rate": 9}]}, "cluster": {"policy": "x"}}


def test_treatments_are_the_cross_product() -> None:
    exp = Experiment(base={}, factors={"cluster.policy": ["a", "b"], "cluster.replicas": [1, 2, 4]})
    names = [n for n, _ in treatments(exp, {"cluster": {}})]
    assert len(names) == 6 and names[0] == "policy=a,replicas=1" and names[-1] == "policy=b,replicas=4"


def test_pareto_front() -> None:
    pts = [{"output_tps": 10, "ttft_p50_s": 1.0}, {"output_tps": 20, "ttft_p50_s": 2.0},
           {"output_tps": 15, "ttft_p50_s": 3.0}, {"output_tps": 5, "ttft_p50_s": 0.5}]
    assert [p["output_tps"] for p in pareto_front(pts)] == [5, 10, 20]


def test_bad_level_fails_the_whole_sweep_up_front(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(SMALL)
    (tmp_path / "exp.yaml").write_text("base: base.yaml\nfactors: {cluster.replicas: [2, -1]}\n")
    with pytest.raises(Exception, match="replicas"):
        load_experiment(tmp_path / "exp.yaml")


def test_sweep_runs_each_treatment_and_compare_plot(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(SMALL)
    (tmp_path / "exp.yaml").write_text("name: e\nbase: base.yaml\nfactors: {cluster.policy: [round-robin, precise]}\n")
    calls: list[BenchConfig] = []

    def runner(cfg: BenchConfig) -> Any:
        calls.append(cfg)
        return run_virtual(cfg)

    summary = run_sweep(tmp_path / "exp.yaml", runner, tmp_path / "out")
    assert [c.cluster.policy for c in calls if c.cluster] == ["round-robin", "precise"]
    assert len(summary["points"]) == 4 and summary["pareto_front"]
    assert (tmp_path / "out" / "policy=precise" / "report.json").is_file()
    reports = [build_report(runner(c)) for c in calls[:2]]
    rows = compare_rows(reports)
    assert rows[0]["out_tps_ratio"] == pytest.approx(1.0) and not math.isnan(rows[1]["out_tps_ratio"])
    assert "| precise |" in markdown_table(rows, "round-robin")
    pngs = plot_runs(reports, tmp_path / "plots", "t")
    assert {p.name for p in pngs} == {"latency_vs_qps.png", "throughput_vs_qps.png", "throughput_vs_latency.png",
                                      "policy_comparison.png"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_cli_bad_config_exits_2_before_any_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("load: {type: poisson, stages: [{rate: 0, duration_s: 1}]}\ntarget: {url: 'http://127.0.0.1:9', model: m}\n")
    assert main(["bench", "run", str(p), "--no-progress", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "load.stages.0.rate" in err and not (tmp_path / "o").exists()


def test_cli_unknown_policy_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(SMALL)
    assert main(["bench", "cluster", str(p), "--policy", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown policy" in capsys.readouterr().err


def test_cli_cluster_run_writes_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(SMALL)
    assert main(["bench", "cluster", str(p), "--policy", "precise", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "report.json").is_file() and (tmp_path / "o" / "llmd_report_v0.2_stage1.json").is_file()
    assert main(["bench", "compare", str(tmp_path / "o"), str(tmp_path / "o")]) == 0
    assert "precise" in capsys.readouterr().out
