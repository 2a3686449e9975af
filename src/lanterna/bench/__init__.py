"""bench: workloads, load shapes, the HTTP load generator, metrics, reports, sweeps, plots.

Public names are imported lazily so ``import lanterna.bench`` stays cheap (no aiohttp, no matplotlib)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BenchConfig": "lanterna.bench.config", "load_config": "lanterna.bench.config",
    "parse_config": "lanterna.bench.config", "iter_workload": "lanterna.bench.workloads",
    "WorkItem": "lanterna.bench.workloads", "RequestRecord": "lanterna.bench.metrics",
    "summarize": "lanterna.bench.metrics", "RunResult": "lanterna.bench.report",
    "write_report": "lanterna.bench.report", "load_report": "lanterna.bench.report",
    "run_http": "lanterna.bench.runner", "run_sweep": "lanterna.bench.sweep",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lanterna.bench' has no attribute {name!r}")
