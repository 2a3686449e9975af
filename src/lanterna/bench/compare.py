"""Side-by-side tables of runs: per stage, output throughput and TTFT, with ratios vs a baseline run.

Stages are matched by position (the same ladder in every run); ratios are what a shared 2-core machine
can report honestly, since absolute figures drift between runs while side-by-side ratios hold.
"""

from __future__ import annotations

import math
from typing import Any

from lanterna.bench.metrics import ratio


def run_label(rep: dict[str, Any]) -> str:
    cl = rep.get("config", {}).get("cluster")
    return str(cl["policy"]) if cl else str(rep.get("name", rep.get("run_id")))


def _row(st: dict[str, Any]) -> dict[str, float | None]:
    ttft = st["latency_s"]["ttft"] or {}
    return {"rate": st.get("requested_rate"), "out_tps": st["throughput"]["output_tokens_per_s"],
            "ttft_mean": ttft.get("mean"), "ttft_p50": ttft.get("p50"), "ttft_p90": ttft.get("p90"),
            "hit": st.get("prefix_cache_hit_rate"), "failed": st.get("num_failed"),
            # virtual-cluster runs: share of the achievable bound (``cluster.headroom``); None elsewhere
            "bound_p90": (st.get("headroom") or {}).get("ttft_p90_bound_s"),
            "share_p90": (st.get("headroom") or {}).get("share_p90"),
            "tps_share": (st.get("headroom") or {}).get("throughput_share")}


def compare_rows(reports: list[dict[str, Any]], baseline: int = 0) -> list[dict[str, Any]]:
    """One row per (stage, run): absolute figures plus ratios vs ``reports[baseline]`` at that stage."""
    base = reports[baseline]
    rows = []
    for i, st_base in enumerate(base["stages"]):
        b = _row(st_base)
        for rep in reports:
            if i >= len(rep["stages"]):
                continue
            r = _row(rep["stages"][i])
            rows.append({"stage": i, "run": run_label(rep), **r,
                         "out_tps_ratio": ratio(r["out_tps"], b["out_tps"]),
                         "ttft_mean_ratio": ratio(r["ttft_mean"], b["ttft_mean"]),
                         "ttft_p90_ratio": ratio(r["ttft_p90"], b["ttft_p90"])})
    return rows


def _f(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


def markdown_table(rows: list[dict[str, Any]], baseline_label: str) -> str:
    head = (f"| stage | QPS | policy | output tok/s | x vs {baseline_label} | TTFT mean s | TTFT p50 s | TTFT p90 s "
            f"| TTFT mean vs {baseline_label} | prefix hit | failed |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        red = r["ttft_mean_ratio"]
        lines.append(
            f"| {r['stage']} | {_f(r['rate'], 'g')} | {r['run']} | {_f(r['out_tps'], ',.0f')} | {_f(r['out_tps_ratio'], '.2f')} "
            f"| {_f(r['ttft_mean'], '.3f')} | {_f(r['ttft_p50'], '.3f')} | {_f(r['ttft_p90'], '.3f')} "
            f"| {_f(None if red is None or math.isnan(red) else (red - 1) * 100, '+.1f')}% "
            f"| {_f(r['hit'], '.2f')} | {_f(r['failed'], 'd')} |")
    return "\n".join(lines)
