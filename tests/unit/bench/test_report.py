"""Reports: JSON layout, llm-d benchmark report v0.2 validity (strict schema), records file and cap."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from lanterna.bench.config import parse_config
from lanterna.bench.llmd_schema import BenchmarkReportV02
from lanterna.bench.metrics import RequestRecord, summarize
from lanterna.bench.report import (
    RECORDS_FILE,
    RunResult,
    StageResult,
    build_report,
    load_records,
    load_report,
    to_llmd_v02,
    write_report,
)


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
    assert [p.name for p in paths] == ["report.json", RECORDS_FILE, "llmd_report_v0.2_stage0.json"]
    rep = load_report(tmp_path)
    assert rep["stages"][0]["failures"] == {"http_503": 1}
    assert (rep["records_file"], rep["num_records"], rep["records_truncated"]) == (RECORDS_FILE, 4, False)
    assert "records" not in rep  # summaries only: the report stays small whatever the run size
    doc = json.loads(paths[2].read_text())
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


def test_records_go_to_a_gzip_jsonl_file_complete_and_byte_stable(tmp_path: Path) -> None:
    res = _result()
    write_report(res, tmp_path / "a")
    recs = list(load_records(tmp_path / "a"))
    assert [r["id"] for r in recs] == ["r0", "r1", "r2", "bad"]
    assert recs[1]["ttft_s"] == pytest.approx(0.1) and recs[3]["error"] == "http_503"
    with gzip.open(tmp_path / "a" / RECORDS_FILE, "rt") as f:
        assert len(f.read().splitlines()) == 4
    write_report(res, tmp_path / "b")  # same run -> identical bytes (fixed gzip mtime)
    assert (tmp_path / "a" / RECORDS_FILE).read_bytes() == (tmp_path / "b" / RECORDS_FILE).read_bytes()


def test_records_are_capped_and_a_zero_cap_writes_no_file(tmp_path: Path) -> None:
    rep = build_report(_result(keep=2))
    assert rep["num_records"] == 2 and rep["records_truncated"] is True
    write_report(_result(), tmp_path)
    paths = write_report(_result(keep=0), tmp_path)  # rerun into the same dir drops the stale file
    assert RECORDS_FILE not in [p.name for p in paths] and not (tmp_path / RECORDS_FILE).exists()
    assert load_report(tmp_path)["records_file"] is None and list(load_records(tmp_path)) == []


def test_v1_reports_with_embedded_records_still_load(tmp_path: Path) -> None:
    v1 = {"schema": "lanterna.bench.report/v1", "stages": [], "records": [{"id": "x"}], "records_truncated": False}
    (tmp_path / "report.json").write_text(json.dumps(v1))
    assert load_report(tmp_path)["schema"].endswith("/v1")
    assert list(load_records(tmp_path)) == [{"id": "x"}]
