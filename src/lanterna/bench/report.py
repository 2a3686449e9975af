"""Run reports: ``report.json`` (config, environment, per-stage summaries), ``records.jsonl.gz`` (one JSON
line per request, capped at ``keep_records``) and one llm-d benchmark report v0.2 file per stage. HTTP runs
and virtual-cluster runs write the same shapes, so ``plot`` and ``compare`` read either.

Why the records live apart: embedded, they made each committed report ~700 KB of JSON that every
regeneration rewrote in full; gzip-compressed JSON lines are ~10x smaller, written with a fixed gzip
mtime so an unchanged run gives identical bytes, and streamable without loading the report."""

from __future__ import annotations

import getpass
import gzip
import hashlib
import json
import os
import platform
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lanterna
from lanterna.bench.config import (
    BenchConfig,
    MultiTurnWorkload,
    RandomWorkload,
    SharedPrefixWorkload,
)
from lanterna.bench.llmd_schema import BenchmarkReportV02
from lanterna.bench.metrics import RequestRecord, StageSummary

REPORT_FILE = "report.json"
RECORDS_FILE = "records.jsonl.gz"
SCHEMA = "lanterna.bench.report/v2"
_SCHEMA_V1 = "lanterna.bench.report/v1"  # records embedded under "records"; still readable


@dataclass(slots=True)
class StageResult:
    index: int
    label: str
    summary: StageSummary
    records: list[RequestRecord] = field(default_factory=list)


@dataclass(slots=True)
class RunResult:
    config: BenchConfig
    stages: list[StageResult]
    started_at: datetime
    ended_at: datetime
    mode: str  # "http" | "virtual"
    extra: dict[str, Any] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


def environment() -> dict[str, Any]:
    return {
        "host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
        "cpus": os.cpu_count(), "lanterna": getattr(lanterna, "__version__", "0.1.0"),
    }


def cfg_id(cfg: BenchConfig) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]


def iter_records(res: RunResult) -> Iterator[dict[str, Any]]:
    """Per-request records as JSON objects, stage by stage, at most ``config.keep_records`` of them.

    Seconds are rounded to the microsecond (below any clock's honest precision here), which halves
    the compressed size."""
    left = res.config.keep_records
    for st in res.stages:
        for r in st.records:
            if left <= 0:
                return
            left -= 1
            yield {k: round(v, 6) if type(v) is float else v for k, v in r.to_json().items()}


def build_report(res: RunResult) -> dict[str, Any]:
    """The JSON report: summaries only; ``write_report`` puts the records in ``records.jsonl.gz``."""
    total = sum(len(s.records) for s in res.stages)
    kept = min(total, res.config.keep_records)
    return {
        "schema": SCHEMA, "run_id": res.run_id, "name": res.config.name, "mode": res.mode,
        "started_at": res.started_at.isoformat(), "ended_at": res.ended_at.isoformat(),
        "config": res.config.model_dump(mode="json"), "environment": environment(), "extra": res.extra,
        "stages": [{"index": s.index, "label": s.label, **s.summary.to_json()} for s in res.stages],
        "records_file": RECORDS_FILE if kept else None, "num_records": kept, "records_truncated": total > kept,
    }


def write_records(res: RunResult, path: Path) -> int:
    """Write the capped records as gzip-compressed JSON lines; returns how many were written."""
    n = 0
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for rec in iter_records(res):
            gz.write(json.dumps(rec, separators=(",", ":")).encode() + b"\n")
            n += 1
    return n


def _stat(s: dict[str, float] | None, units: str, scale: float = 1.0) -> dict[str, Any] | None:
    if s is None:
        return None
    keys = ("mean", "min", "p50", "p90", "p95", "p99", "max")
    return {"units": units, **{k: s[k] * scale for k in keys if k in s}}


def _rate_stat(v: float, units: str) -> dict[str, Any]:
    return {"units": units, "mean": v}


def _seq(value: float, ratio: float = 0.0) -> dict[str, Any]:
    if ratio:
        return {"distribution": "random", "value": value, "min": int(value * (1 - ratio)), "max": int(value * (1 + ratio))}
    return {"distribution": "fixed", "value": value}


def _load_standardized(cfg: BenchConfig, stage: dict[str, Any]) -> dict[str, Any]:
    wl = cfg.workload
    out: dict[str, Any] = {"tool": "lanterna-bench", "tool_version": getattr(lanterna, "__version__", "0.1.0"),
                           "stage": max(1, int(stage["index"]) + 1)}
    if isinstance(wl, SharedPrefixWorkload):
        out["input_seq_len"] = _seq(wl.system_len + wl.question_len)
        out["output_seq_len"] = _seq(wl.output_len)
        out["prefix"] = {"prefix_len": _seq(wl.system_len), "num_groups": wl.num_groups,
                         "num_users_per_group": wl.prompts_per_group, "num_prefixes": 1}
    elif isinstance(wl, RandomWorkload):
        out["input_seq_len"] = _seq(wl.input_len, wl.range_ratio)
        out["output_seq_len"] = _seq(wl.output_len, wl.range_ratio)
    elif isinstance(wl, MultiTurnWorkload):
        out["input_seq_len"] = _seq(wl.system_len + wl.question_len)
        out["output_seq_len"] = _seq(wl.output_len)
        out["multi_turn"] = {"enabled": True, "max_turns": _seq(wl.num_rounds)}
    else:
        lat = stage.get("tokens", {})
        n = max(1, stage.get("num_completed", 0))
        out["input_seq_len"] = {"distribution": "other", "value": lat.get("input", 0) / n}
    if stage.get("requested_rate"):
        out["rate_qps"] = stage["requested_rate"]
    if stage.get("concurrency"):
        out["concurrency"] = stage["concurrency"]
    return out


def _stack(cfg: BenchConfig, cid: str) -> list[dict[str, Any]]:
    if cfg.cluster is not None:
        c = cfg.cluster
        return [
            {"metadata": {"kind": "inference_engine", "label": f"lanterna-sim-{c.profile}", "cfg_id": cid,
                          "description": f"{c.replicas} simulated replicas (virtual time)"},
             "standardized": {"kind": "inference_engine", "tool": "lanterna-sim", "model": c.model,
                              "replicas": c.replicas, "profile": c.profile},
             "Native": {"config": c.model_dump(mode="json")}},
            {"metadata": {"kind": "generic", "label": "lanterna-scheduler", "cfg_id": cid,
                          "description": f"policy {c.policy}"},
             "standardized": {"kind": "generic", "tool": "lanterna-scheduler", "policy": c.policy},
             "Native": {"config": {"policy": c.policy}}},
        ]
    assert cfg.target is not None
    t = cfg.target
    return [{"metadata": {"kind": "generic", "label": t.url, "cfg_id": cid, "description": "OpenAI endpoint under test"},
             "standardized": {"kind": "generic", "tool": "openai-endpoint", "model": t.model},
             "Native": {"config": t.model_dump(mode="json")}}]


def to_llmd_v02(report: dict[str, Any], stage: dict[str, Any], cfg: BenchConfig) -> dict[str, Any]:
    """One stage as an llm-d benchmark report v0.2 document (validated before it is returned)."""
    lat, tp = stage["latency_s"], stage["throughput"]
    cid = cfg_id(cfg)
    start = datetime.fromisoformat(report["started_at"])
    end = datetime.fromisoformat(report["ended_at"])
    doc = {
        "version": "0.2",
        "run": {"uid": f"{report['run_id']}-{stage['index']}", "eid": report["run_id"],
                "time": {"start": report["started_at"], "end": report["ended_at"],
                         "duration": f"PT{(end - start).total_seconds():.3f}S"},
                "user": getpass.getuser()},
        "scenario": {
            "stack": _stack(cfg, cid),
            "load": {"metadata": {"cfg_id": cid, "description": f"{cfg.name}: {stage['label']}"},
                     "standardized": _load_standardized(cfg, stage),
                     "Native": {"config": cfg.model_dump(mode="json")}},
        },
        "results": {"request_performance": {"aggregate": {
            "requests": {"total": stage["num_requests"], "failures": stage["num_failed"],
                         "incomplete": stage["num_incomplete"]},
            "latency": {k: v for k, v in {
                "time_to_first_token": _stat(lat["ttft"], "ms", 1e3),
                "time_per_output_token": _stat(lat["tpot"], "ms/token", 1e3),
                "inter_token_latency": _stat(lat["itl"], "ms/token", 1e3),
                "normalized_time_per_output_token": _stat(lat["ntpot"], "ms/token", 1e3),
                "request_latency": _stat(lat["e2e"], "s"),
            }.items() if v is not None},
            "throughput": {
                "input_token_rate": _rate_stat(tp["input_tokens_per_s"], "token/s"),
                "output_token_rate": _rate_stat(tp["output_tokens_per_s"], "token/s"),
                "total_token_rate": _rate_stat(tp["total_tokens_per_s"], "token/s"),
                "requests_rate": _rate_stat(tp["requests_per_s"], "qps"),
            },
        }}},
    }
    BenchmarkReportV02.model_validate(doc)
    return doc


def write_report(res: RunResult, out_dir: Path) -> list[Path]:
    """Write ``report.json``, ``records.jsonl.gz`` (when any record is kept) and
    ``llmd_report_v0.2_stage<i>.json`` (warm-up excluded); return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(res)
    paths = [out_dir / REPORT_FILE]
    paths[0].write_text(json.dumps(report, indent=1, default=_json_default))
    stale = out_dir / RECORDS_FILE
    if report["records_file"]:
        write_records(res, stale)
        paths.append(stale)
    elif stale.exists():  # a rerun into the same directory must not leave another run's records
        stale.unlink()
    for st in report["stages"]:
        p = out_dir / f"llmd_report_v0.2_stage{st['index']}.json"
        p.write_text(json.dumps(to_llmd_v02(report, st, res.config), indent=1, default=_json_default))
        paths.append(p)
    return paths


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a report from a run directory or its ``report.json``."""
    p = Path(path)
    if p.is_dir():
        p = p / REPORT_FILE
    data: dict[str, Any] = json.loads(p.read_text())
    if data.get("schema") not in (SCHEMA, _SCHEMA_V1):
        raise ValueError(f"{p}: not a lanterna bench report")
    return data


def load_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream a run's per-request records (from ``records.jsonl.gz``, or embedded in a v1 report)."""
    p = Path(path)
    run_dir = p if p.is_dir() else p.parent
    report = load_report(run_dir)
    if report["schema"] == _SCHEMA_V1:
        yield from report.get("records", [])
        return
    if not report.get("records_file"):
        return
    with gzip.open(run_dir / report["records_file"], "rt") as f:
        for line in f:
            yield json.loads(line)


def now_utc() -> datetime:
    return datetime.now(UTC)
