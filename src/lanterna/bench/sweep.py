"""Design-of-experiments sweeps: factors x levels -> one run and report per treatment, plus a summary with
the Pareto front (output throughput up, TTFT p50 down) over every (treatment, stage) point.

Experiment file::

    name: inference-scheduling
    base: scenario.yaml            # a BenchConfig (path relative to this file) or an inline mapping
    factors:                       # dotted keys into the config; numeric parts index lists
      cluster.policy: [round-robin, precise]
      cluster.replicas: [4, 8]

Every treatment is validated before the first one runs, so a bad level fails the sweep up front.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lanterna.bench.config import BenchConfig, _resolve_paths, parse_config
from lanterna.bench.report import RunResult, build_report, write_report
from lanterna.errors import ConfigError


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "sweep"
    base: str | dict[str, Any]
    factors: dict[str, list[Any]] = Field(min_length=1)
    output_dir: Path | None = None


def set_path(data: Any, key: str, value: Any) -> None:
    """Dotted assignment; numeric parts index lists (``load.stages.0.rate``)."""
    parts = key.split(".")
    cur = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(cur, list):
            idx = int(part)
            if last:
                cur[idx] = value
            else:
                cur = cur[idx]
        else:
            if last:
                cur[part] = value
            else:
                cur = cur.setdefault(part, {})


def _label(key: str, value: Any, level: int, num_levels: int) -> str | None:
    """``policy=precise``; a structured level is named by its position; a single-level factor is omitted."""
    if isinstance(value, dict | list):
        return None if num_levels == 1 else f"{key.split('.')[-1]}#{level}"
    return f"{key.split('.')[-1]}={value}"


def treatments(exp: Experiment, base: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, config mapping) for every combination of factor levels, in a stable order."""
    keys = list(exp.factors)
    out = []
    for idx in itertools.product(*(range(len(exp.factors[k])) for k in keys)):
        data = deepcopy(base)
        labels = []
        for k, i in zip(keys, idx, strict=True):
            set_path(data, k, exp.factors[k][i])
            labels.append(_label(k, exp.factors[k][i], i, len(exp.factors[k])))
        out.append((",".join(x for x in labels if x) or "base", data))
    return out


def load_experiment(path: str | Path) -> tuple[Experiment, list[tuple[str, BenchConfig]]]:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
        exp = Experiment.model_validate(raw)
    except OSError as exc:
        raise ConfigError(f"cannot read experiment {p}: {exc.strerror}") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"invalid experiment {p}: {exc}") from None
    if isinstance(exp.base, str):
        bp = (p.parent / exp.base) if not Path(exp.base).is_absolute() else Path(exp.base)
        try:
            base = yaml.safe_load(bp.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read base config {bp}: {exc.strerror}") from None
        _resolve_paths(base, bp.parent)
    else:
        base = exp.base
        _resolve_paths(base, p.parent)
    configs = [(name, parse_config(data, f"{p} [{name}]")) for name, data in treatments(exp, base)]
    return exp, configs


def pareto_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points not dominated on (output throughput higher, TTFT p50 lower)."""
    def dominated(a: dict[str, Any]) -> bool:
        return any(b["output_tps"] >= a["output_tps"] and b["ttft_p50_s"] <= a["ttft_p50_s"]
                   and (b["output_tps"] > a["output_tps"] or b["ttft_p50_s"] < a["ttft_p50_s"]) for b in points)
    return sorted((a for a in points if not dominated(a)), key=lambda a: a["output_tps"])


def run_sweep(path: str | Path, runner: Callable[[BenchConfig], RunResult], out_dir: Path | None = None) -> dict[str, Any]:
    """Run every treatment, write its report under ``out/<treatment>/`` and ``out/summary.json``."""
    exp, configs = load_experiment(path)
    out = out_dir or exp.output_dir or Path("bench-results") / exp.name
    points: list[dict[str, Any]] = []
    runs = []
    for name, cfg in configs:
        res = runner(cfg)
        d = out / name.replace("/", "_")
        write_report(res, d)
        rep = build_report(res)
        runs.append({"treatment": name, "dir": str(d), "extra": {k: v for k, v in rep["extra"].items()
                                                                   if k != "scheduler_plugins"}})
        for st in rep["stages"]:
            ttft = st["latency_s"]["ttft"]
            if ttft is None:
                continue
            points.append({"treatment": name, "stage": st["index"], "requested_rate": st["requested_rate"],
                           "output_tps": st["throughput"]["output_tokens_per_s"], "ttft_p50_s": ttft["p50"],
                           "ttft_p90_s": ttft["p90"], "ttft_mean_s": ttft["mean"]})
    summary = {"experiment": exp.name, "factors": exp.factors, "runs": runs, "points": points,
               "pareto_front": pareto_front(points)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
