"""Reports: JSON layout, llm-d benchmark report v0.2 validity (strict schema), records cap."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from lanterna.bench.config import parse_config
from lanterna.bench.llmd_schema import BenchmarkReportV02
from lanterna.bench.metrics import RequestRecord, summarize
from lanterna.bench.report import RunResult, StageResult, build_report, load_report, to_llmd_v02, write_report


def _result(keep: int = 100) -> RunResult:
    cfg = parse_config({"name": "t", "keep_records": keep,
                        "workload": {"type": "shared-prefix", "num_groups": 2, "prompts_per_group": 2},
                        "load": {"type": "poisson", "stages": [{"rate": 2, "num_requests": 3}]},
                        "target": {"url": "http://x:1", "model": "m"}})
    recs = []
    for i in range(3):
        r = RequestRecord(f"r{i}", 0, i, i, prompt_tokens=100, cached_tokens=10)
        r.on_tokens(i + 0.1)
        r.on_tokens(i + 0.2)
        r.end_s = i + 0.2
        recs.append(r)
    recs.append(RequestRecord("bad", 0, 3, 3, error="http_503"))
    st = StageResult(0, "stage 0", summarize(recs, requested_rate=2.0), recs)
    t = datetime(2026, 1, 1, tzinfo=UTC)
    return RunResult(cfg, [st], t, t, "http")


def test_write_report_and_v02_files_validate(tmp_path: Path) -> None:
    paths = write_report(_result(), tmp_path)
    assert [p.name for p in paths] == ["report.json", "llmd_report_v0.2_stage0.json"]
    rep = load_report(tmp_path)
    assert rep["stages"][0]["failures"] == {"http_503": 1} and len(rep["records"]) == 4
    doc = json.loads(paths[1].read_text())
    BenchmarkReportV02.model_validate(doc)
    agg = doc["results"]["request_performance"]["aggregate"]
    assert agg["requests"] == {"total": 4, "failures": 1, "incomplete": 0}
    assert agg["latency"]["time_to_first_token"]["units"] == "ms"
    assert agg["latency"]["time_to_first_token"]["mean"] == pytest.approx(100.0)
    assert doc["scenario"]["load"]["standardized"]["prefix"]["num_groups"] == 2
    assert doc["scenario"]["load"]["standardized"]["rate_qps"] == 2.0


def test_schema_rejects_wrong_units_and_unknown_keys() -> None:
    res = _result()
    doc = to_llmd_v02(build_report(res), build_report(res)["stages"][0], res.config)
    doc["results"]["request_performance"]["aggregate"]["latency"]["time_to_first_token"]["units"] = "hours"
    with pytest.raises(ValidationError):
        BenchmarkReportV02.model_validate(doc)
    doc2 = to_llmd_v02(build_report(res), build_report(res)["stages"][0], res.config)
    doc2["run"]["bogus"] = 1
    with pytest.raises(ValidationError):
        BenchmarkReportV02.model_validate(doc2)


def test_records_are_capped() -> None:
    rep = build_report(_result(keep=2))
    assert len(rep["records"]) == 2 and rep["records_truncated"] is True
