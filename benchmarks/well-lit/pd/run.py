"""Well-lit P/D: aggregated vs prefill/decode disaggregation at equal GPU count, in the virtual cluster.

    PYTHONPATH=src .venv/bin/python benchmarks/well-lit/pd/run.py [--quick]

Prefill-heavy traffic, 20:1 ISL:OSL (4,000 prompt tokens +-20%, 200 output tokens), Poisson arrivals, 8
replicas of qwen3-32b on 2 H100s each (16 GPUs). Treatments: aggregated (llm-d's default scorers on every
replica) and xPyD splits of the same 8 replicas (P/D EndpointPickerConfig, decider threshold 0: every request
disaggregates); then a threshold sweep of ``prefix-based-pd-decider`` ``nonCachedTokens`` on a shared-prefix
variant (3,200-token shared system prompt + 800-token question, 200 out: still 20:1), where the threshold
decides which requests skip P/D. KV moves over the ``rdma`` link model (sim/kv_link.py: 40 GB/s, 1 ms setup).
Writes results.json, plots/*.png and RESULTS.md next to this file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from lanterna.bench.config import BenchConfig
from lanterna.cluster.virtual import run_virtual
from lanterna.sim.profiles import get_profile

HERE = Path(__file__).resolve().parent
PROFILE = "qwen3-32b-tp2-h100"
REPLICAS = 8
RANDOM = {"type": "random", "input_len": 4000, "output_len": 200, "range_ratio": 0.2}
SHARED = {"type": "shared-prefix", "num_groups": 16, "prompts_per_group": 40, "system_len": 3200,
          "question_len": 800, "output_len": 200}


def config(workload: dict[str, Any], rate: float, n: int, pd: dict[str, Any] | None, seed: int = 0) -> BenchConfig:
    cluster: dict[str, Any] = {"replicas": REPLICAS, "profile": PROFILE,
                               "policy": "pd" if pd is not None else "llm-d-default"}
    if pd is not None:
        cluster["pd"] = pd
    return BenchConfig.model_validate({
        "name": "pd", "seed": seed, "workload": {**workload, "num_prompts": n} if workload["type"] == "random"
        else workload, "load": {"type": "poisson", "stages": [{"rate": rate, "num_requests": n}]},
        "cluster": cluster})


def measure(label: str, cfg: BenchConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = run_virtual(cfg)
    s = res.stages[0].summary
    lat = s.latency.to_json()
    gpus = REPLICAS * get_profile(PROFILE).tp
    ttft, itl = lat["ttft"] or {}, lat["itl"] or {}
    row = {"treatment": label, "rate": s.requested_rate, "completed": s.num_completed, "failed": s.num_failed,
           "ttft_p50_s": ttft.get("p50"), "ttft_p90_s": ttft.get("p90"), "ttft_p99_s": ttft.get("p99"),
           "itl_p50_s": itl.get("p50"), "itl_p90_s": itl.get("p90"), "itl_p99_s": itl.get("p99"),
           "itl_mean_s": itl.get("mean"),
           "out_tok_s_per_gpu": s.throughput.output_tokens_per_s / gpus,
           "total_tok_s_per_gpu": s.throughput.total_tokens_per_s / gpus,
           "prefix_hit": s.prefix_cache_hit_rate, "pd": res.extra.get("pd"),
           "virtual_s": res.extra["virtual_time_s"], "wall_s": time.perf_counter() - t0}
    print(f"{label:>14} rate {row['rate']:>5g}: TTFT p50 {row['ttft_p50_s']:.3f} p90 {row['ttft_p90_s']:.3f} "
          f"ITL p99 {row['itl_p99_s'] * 1e3:.1f} ms  out tok/s/GPU {row['out_tok_s_per_gpu']:.1f}  "
          f"({row['wall_s']:.1f} s)", flush=True)
    return row


def splits() -> list[tuple[str, dict[str, Any] | None]]:
    return [("aggregated", None)] + [(f"{p}P{REPLICAS - p}D", {"prefill_replicas": p, "threshold": 0})
                                     for p in (2, 3, 4, 5)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    ap.add_argument("--plot-only", action="store_true", help="redraw plots/ from results.json")
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads((HERE / "results.json").read_text()))
        return
    n = 150 if args.quick else 600
    rates = [4.0, 8.0, 12.0, 16.0]
    out: dict[str, Any] = {"profile": PROFILE, "replicas": REPLICAS, "gpus": REPLICAS * get_profile(PROFILE).tp,
                           "workload": RANDOM, "num_requests": n, "splits": [], "thresholds": []}
    for label, pd in splits():
        for rate in rates:
            out["splits"].append(measure(label, config(RANDOM, rate, n, pd)))
    shared = {**SHARED, "num_groups": max(4, n // 40)}
    out["shared_workload"] = shared
    for rate in (8.0, 12.0):
        out["thresholds"].append(measure("aggregated", config(shared, rate, n, None)))
        for th in (0, 256, 512, 2048, 4096):
            row = measure(f"3P5D th={th}", config(shared, rate, n, {"prefill_replicas": 3, "threshold": th}))
            row["threshold"] = th
            out["thresholds"].append(row)
    (HERE / "results.json").write_text(json.dumps(out, indent=1))
    plot(out)
    print("wrote", HERE / "results.json")


def plot(out: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = HERE / "plots"
    plots.mkdir(exist_ok=True)
    rows = out["splits"]
    labels = list(dict.fromkeys(r["treatment"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for lab in labels:
        rs = [r for r in rows if r["treatment"] == lab]
        x = [r["rate"] for r in rs]
        style = {"linewidth": 2.5, "color": "black"} if lab == "aggregated" else {}
        axes[0].plot(x, [r["ttft_p90_s"] for r in rs], marker="o", label=lab, **style)
        axes[1].plot(x, [r["itl_p99_s"] * 1e3 for r in rs], marker="o", label=lab, **style)
        axes[2].plot(x, [r["out_tok_s_per_gpu"] for r in rs], marker="o", label=lab, **style)
    for ax, t in zip(axes, ("TTFT p90 (s)", "ITL p99 (ms)", "output tokens/s per GPU"), strict=True):
        ax.set_xlabel("request rate (req/s)")
        ax.set_title(t)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.suptitle(f"P/D vs aggregated, {out['gpus']} H100s ({REPLICAS} x qwen3-32b TP2), ISL:OSL 4000:200")
    fig.tight_layout()
    fig.savefig(plots / "pd_splits.png", dpi=110)
    plt.close(fig)

    th = out["thresholds"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for rate in sorted({r["rate"] for r in th}):
        rs = [r for r in th if r["rate"] == rate and "threshold" in r]
        agg = next(r for r in th if r["rate"] == rate and "threshold" not in r)
        x = [r["threshold"] for r in rs]
        ln = axes[0].plot(x, [r["ttft_p90_s"] for r in rs], marker="o", label=f"3P5D, {rate:g} req/s")[0]
        axes[0].axhline(agg["ttft_p90_s"], ls="--", color=ln.get_color(), label=f"aggregated, {rate:g} req/s")
        axes[1].plot(x, [r["itl_p99_s"] * 1e3 for r in rs], marker="o", color=ln.get_color())
        axes[1].axhline(agg["itl_p99_s"] * 1e3, ls="--", color=ln.get_color())
        axes[2].plot(x, [r["pd"]["disagg_share"] for r in rs], marker="o", color=ln.get_color())
    for ax, t in zip(axes, ("TTFT p90 (s)", "ITL p99 (ms)", "share of requests disaggregated"), strict=True):
        ax.set_xlabel("nonCachedTokens threshold")
        ax.set_title(t)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("prefix-based-pd-decider threshold sweep (shared 3,200-token prefix + 800 new, 200 out)")
    fig.tight_layout()
    fig.savefig(plots / "pd_threshold.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
