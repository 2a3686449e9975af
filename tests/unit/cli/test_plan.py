"""``lanterna plan memory`` / ``plan size`` end to end (the size search runs the real virtual cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lanterna.cli.main import main


def test_plan_memory_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "memory", "--model", "llama-3.1-8b", "--gpu", "H100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 430_000 <= out["kv_cache_tokens"] <= 470_000
    assert out["max_concurrent_requests"] == out["num_gpu_blocks"] // (8192 // 16)
    assert out["tensor_parallel_size"] == 1 and out["feasible_tp"][0] == 1


def test_plan_memory_does_not_fit_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "memory", "--model", "llama-3.1-70b", "--tp", "1"]) == 1
    assert "does not fit" in capsys.readouterr().err


def test_plan_size_quick_writes_plan_plot_and_deploy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["plan", "size", "--model", "llama-3.1-8b", "--gpu", "H100", "--workload", "random:512:64",
               "--rate", "40", "--slo", "ttft_p90=0.5,tpot_p90=30ms", "--quick", "--requests", "60",
               "--tp", "1", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    chosen = plan["chosen"]
    assert chosen["meets_slo"] and chosen["ttft_p90_s"] <= 0.5 and chosen["tpot_p90_s"] <= 0.03
    # minimal: one fewer replica (if any was tried) misses
    fewer = [c for c in plan["candidates"] if c["replicas"] == chosen["replicas"] - 1]
    assert all(not c["meets_slo"] for c in fewer)
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    values = yaml.safe_load((tmp_path / "deploy" / "values.yaml").read_text())
    assert values["decode"]["replicas"] == chosen["replicas"]
    assert "cheapest meeting" in capsys.readouterr().out


def test_plan_size_bad_slo_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "size", "--model", "llama-3.1-8b", "--workload", "random:1:1", "--rate", "1",
                 "--slo", "p99=1"]) == 2
    assert "bad SLO term" in capsys.readouterr().err
