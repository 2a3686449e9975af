"""The fidelity report's arithmetic (benchmarks/fidelity/run_fidelity.py): the reference is the mean of the real
runs, their spread is the noise floor, and the committed report's simulator side is what the code gives now."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(REPO / "benchmarks" / "fidelity"), str(REPO / "benchmarks")]
import run_fidelity as rf  # noqa: E402


def _row(rate: float, scale: float) -> dict[str, Any]:
    return {"rate": rate, **{k: 0.01 * scale * rate for k in rf.METRICS}, "output_tokens_per_s": 100.0 * scale * rate,
            "hit_rate": 0.9, "itl_zero_share": 0.0, "num_ok": 100, "num_failed": 0}


def test_mean_spread_range_and_run_vs_run() -> None:
    runs = [[_row(1, 1.0), _row(2, 1.0)], [_row(1, 1.2), _row(2, 1.2)]]  # run 2 is 20% slower everywhere
    mean = rf.mean_figures(runs)
    assert mean[0]["ttft_p50_s"] == pytest.approx(0.011) and mean[1]["rate"] == 2
    assert rf.spread(runs)[0]["itl_p90_s"] == pytest.approx(0.2 / 1.1)
    sim = [_row(1, 1.1), _row(2, 1.5)]  # stage 1 at the mean, stage 2 beyond the slow run + 15%
    c = rf.comparisons(runs, sim)
    assert rf.count_ok(c["vs_mean"]) == len(rf.CHECKED)  # stage 1's four cells
    assert c["in_real_range"] == {"inside": len(rf.CHECKED), "cells": 2 * len(rf.CHECKED)}
    rv = c["run_vs_run"]
    assert rv["cells"] == 2 * len(rf.CHECKED) and rv["outside"] == rv["cells"]  # +20% > 15% in every cell
    assert len(c["per_run"]) == 2


def test_committed_report_replays_to_its_own_simulator_side(tmp_path: Path) -> None:
    """``--replay`` of the committed report reproduces its simulator figures: the report is what this code says
    (rerun ``run_fidelity.py --replay benchmarks/fidelity/report.json --out benchmarks/fidelity`` after a
    simulator change)."""
    saved = json.loads((REPO / "benchmarks" / "fidelity" / "report.json").read_text())
    args = rf.parse_args(["--replay", str(REPO / "benchmarks" / "fidelity" / "report.json"), "--out", str(tmp_path),
                          "--sim-seeds", str(saved["config"].get("sim_seeds", 4))])
    res = rf.replay(args)
    for got, want in zip(res["sim"], saved["sim"], strict=True):
        for k in ("ttft_p50_s", "itl_p90_s", "output_tokens_per_s"):
            assert got[k] == pytest.approx(want[k], rel=1e-9), (got["rate"], k)
    rf.write_md(res, tmp_path / "report.md")
    assert "simulator vs real" in (tmp_path / "report.md").read_text()
