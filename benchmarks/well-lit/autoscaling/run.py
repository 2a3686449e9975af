"""Autoscaling policies on long traces in the virtual cluster: fixed N vs saturation (WVA V1) vs model-based vs
token-capacity, with cold starts and scale-to-zero.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/well-lit/autoscaling/run.py [--trace diurnal] [--policy ...]``.
Writes ``results/<trace>.json`` (per policy: SLO attainment, GPU-hours, drops, time to react, the replica
timeline) and ``plots/*.png``; ``RESULTS.md`` is written from them by ``--report`` (the default after a run).
Traces are generated deterministically by ``traces.py`` into ``traces/`` (not committed: rerun to rebuild).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from lanterna.bench.config import parse_config
from lanterna.cluster.virtual import VirtualCluster

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import traces  # noqa: E402

PROFILE = "qwen3-32b-tp2-h100"
SLO = {"ttft_s": 2.0, "tpot_s": 0.05}
AUTOSCALE = {"interval_s": 15, "min_replicas": 0, "max_replicas": 16, "scale_to_zero": True, "retention_s": 300,
             "ttft_s": SLO["ttft_s"], "itl_s": SLO["tpot_s"], "storage_bandwidth_bps": 2e9,
             "startup_overhead_s": 30}
POLICIES = ["fixed-peak", "fixed-mean", "saturation", "model-based", "token-capacity"]


def config(trace: Path, policy: str, fixed: dict[str, int]) -> Any:
    auto: dict[str, Any] = dict(AUTOSCALE)
    if policy.startswith("fixed"):
        auto.update(policy="fixed", initial_replicas=fixed[policy], min_replicas=fixed[policy], scale_to_zero=False)
    else:
        auto.update(policy=policy, initial_replicas=0)
    return parse_config({
        "name": f"autoscaling-{trace.stem}-{policy}", "seed": 11,
        "workload": {"type": "trace", "path": str(trace), "block_tokens": 512},
        "load": {"type": "trace"},
        "cluster": {"replicas": 1, "profile": PROFILE, "policy": "precise", "scrape_interval_s": 0.1,
                    "flow_control": {"queue_ttl_s": 120.0}, "autoscale": auto},
        "slo": SLO,
    })


def react_times(timeline: list[list[float]], onsets: list[float]) -> dict[str, float | None]:
    """Per burst onset: seconds to the first higher target, and to the first higher ready count."""
    decide, ready = [], []
    for t0 in onsets:
        base = next((r for r in timeline if r[0] >= t0), None)
        if base is None:
            continue
        up = next((r[0] - t0 for r in timeline if r[0] >= t0 and r[7] > base[1] + base[2]), None)
        rd = next((r[0] - t0 for r in timeline if r[0] >= t0 and r[1] > base[1]), None)
        if up is not None:
            decide.append(up)
        if rd is not None:
            ready.append(rd)
    return {"decide_s": sum(decide) / len(decide) if decide else None,
            "ready_s": sum(ready) / len(ready) if ready else None}


def run_one(trace: Path, meta: dict[str, Any], policy: str, fixed: dict[str, int]) -> dict[str, Any]:
    cfg = config(trace, policy, fixed)
    cpu0 = time.process_time()
    res = VirtualCluster(cfg).run()
    cpu = time.process_time() - cpu0
    recs = res.stages[0].records
    ok = [r for r in recs if r.error is None and r.ttft_s is not None]
    good = sum(1 for r in ok if r.ttft_s is not None and r.ttft_s <= SLO["ttft_s"]
               and (r.tpot_s is None or r.tpot_s <= SLO["tpot_s"]))
    a = res.extra["autoscale"]
    ttft = sorted(r.ttft_s for r in ok if r.ttft_s is not None)
    return {
        "policy": policy, "requests": len(recs), "completed": len(ok),
        "dropped": {k: v for k, v in res.stages[0].summary.failures.items()},
        "slo_attainment": good / len(recs) if recs else None,
        "ttft_p50_s": ttft[len(ttft) // 2] if ttft else None,
        "ttft_p99_s": ttft[min(len(ttft) - 1, math.ceil(0.99 * len(ttft)) - 1)] if ttft else None,
        "gpu_hours": a["gpu_hours"], "replica_hours": a["replica_hours"], "cost": a["cost"],
        "num_scale_ups": a["num_scale_ups"], "num_scale_downs": a["num_scale_downs"],
        "max_replicas": a["max_replicas_seen"], "cold_start_s": a["cold_start_s"],
        "max_rate_rps_per_replica": a["max_rate_rps_per_replica"], "shape": a["shape"],
        "react": react_times(a["timeline"], meta["bursts"]),
        "virtual_s": res.extra["virtual_time_s"], "cpu_s": cpu, "x_real_time_cpu": res.extra["virtual_time_s"] / cpu,
        "timeline": a["timeline"], "changes": a["changes"][:200],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trace", action="append", choices=["diurnal", "mooncake"])
    ap.add_argument("--policy", action="append", choices=POLICIES)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    for name in ([] if args.report_only else args.trace or ["diurnal", "mooncake"]):
        path = HERE / "traces" / f"{name}.jsonl"
        meta = getattr(traces, name)(path, seed=0)
        # fixed baselines sized by the same per-replica rate the model-based policy uses
        probe = VirtualCluster(config(path, "saturation", {}))
        per = probe.autoscaler.operating_point.rate_rps
        n = meta["requests"]
        active = meta["duration_s"] - sum(b - a for a, b in meta["gaps"])
        peak = {"diurnal": 16.0 + 20.0, "mooncake": 0.6 * 3.5 * 2}[name]
        fixed = {"fixed-peak": max(1, math.ceil(peak / per)), "fixed-mean": max(1, math.ceil(n / active / per))}
        rows = []
        for pol in args.policy or POLICIES:
            r = run_one(path, meta, pol, fixed)
            rows.append(r)
            print(f"{name:9s} {pol:15s} slo {r['slo_attainment']:.3f}  gpu-h {r['gpu_hours']:6.2f}  "
                  f"dropped {sum(r['dropped'].values())}  react {r['react']}  max {r['max_replicas']}  "
                  f"({r['x_real_time_cpu']:.0f}x real time)", flush=True)
        old = out / f"{name}.json"
        if old.is_file():  # a partial rerun (--policy) replaces only its own rows
            mine = {r["policy"] for r in rows}
            rows = [r for r in json.loads(old.read_text())["runs"] if r["policy"] not in mine] + rows
            rows.sort(key=lambda r: POLICIES.index(r["policy"]))
        old.write_text(json.dumps({"trace": meta, "fixed": fixed, "slo": SLO, "autoscale": AUTOSCALE, "runs": rows},
                                  indent=1))
    import report

    report.write(HERE)


if __name__ == "__main__":
    main()
