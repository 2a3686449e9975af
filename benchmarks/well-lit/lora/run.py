"""Multi-tenant LoRA on the virtual-time cluster: Zipf traffic over 24 adapters, ``--max-loras 4`` per replica.

    PYTHONPATH=src .venv/bin/python benchmarks/well-lit/lora/run.py [--quick]

Runs ``scenario.yaml`` once per policy (round-robin, llm-d's default, llm-d's default + ``lora-affinity-scorer``,
``lanterna``, ``lanterna`` + ``lanterna-lora-placement-scorer``) over its Poisson ladder and writes
``results/lora.json``, ``plots/*.png`` and the tables of ``RESULTS.md`` (between the TABLES markers).
Production scheduler, gateway load accounting and simulated engines with LoRA slots; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from lanterna.bench.config import parse_config  # noqa: E402
from lanterna.cluster.virtual import VirtualCluster  # noqa: E402

HERE = Path(__file__).resolve().parent
POLICIES = ["round-robin", "llm-d-default", "llm-d-lora", "lanterna", "lanterna-lora"]


def run_policy(policy: str, quick: bool) -> dict[str, Any]:
    doc = yaml.safe_load((HERE / "scenario.yaml").read_text())
    doc["cluster"]["policy"] = policy
    if quick:
        for st in doc["load"]["stages"]:
            st["duration_s"] = 5
    vc = VirtualCluster(parse_config(doc))
    t0 = time.process_time()
    res = vc.run()
    stages = []
    for st in res.stages:
        s = st.summary
        ttft = s.latency.ttft
        stages.append({"rate": s.requested_rate, "out_tok_s": s.throughput.output_tokens_per_s,
                       "completed": s.num_completed, "failed": s.num_failed,
                       "ttft_mean_s": ttft.mean if ttft else None, "ttft_p50_s": ttft.p50 if ttft else None,
                       "ttft_p90_s": ttft.p90 if ttft else None, "ttft_p99_s": ttft.p99 if ttft else None,
                       "hit_rate": s.prefix_cache_hit_rate})
    lora = res.extra["lora"]
    print(policy, [(round(x["out_tok_s"]), round(x["ttft_p90_s"] or 0, 3)) for x in stages],
          "loads", lora["loads_total"], f"cpu {time.process_time() - t0:.1f}s", flush=True)
    return {"policy": policy, "stages": stages, "lora": lora}


def tables(runs: list[dict[str, Any]]) -> str:
    base = runs[0]
    lines = ["| QPS | policy | output tok/s | x round-robin | TTFT mean s | TTFT p50 s | TTFT p90 s | TTFT p99 s "
             "| prefix hit |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for i, b in enumerate(base["stages"]):
        for r in runs:
            s = r["stages"][i]
            lines.append(f"| {s['rate']:g} | {r['policy']} | {s['out_tok_s']:,.0f} | {s['out_tok_s'] / b['out_tok_s']:.2f} "
                         f"| {s['ttft_mean_s']:.3f} | {s['ttft_p50_s']:.3f} | {s['ttft_p90_s']:.3f} "
                         f"| {s['ttft_p99_s']:.3f} | {s['hit_rate']:.2f} |")
    lines += ["", "Adapter loads (swaps) over the whole run, all stages and warm-up:", "",
              "| policy | loads total | loads per replica (min / mean / max) | evictions total "
              "| replicas per adapter (mean) | replicas of the hottest adapter |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        lo = r["lora"]
        per = [v["loads"] for v in lo["per_replica"].values()]
        ev = sum(v["evictions"] for v in lo["per_replica"].values())
        hot = lo["replicas_per_adapter"].get("lora-00", 0)
        lines.append(f"| {r['policy']} | {lo['loads_total']} | {min(per)} / {sum(per) / len(per):.1f} / {max(per)} "
                     f"| {ev} | {lo['replicas_per_adapter_mean']:.2f} | {hot} |")
    return "\n".join(lines)


def plots(runs: list[dict[str, Any]]) -> None:
    out = HERE / "plots"
    out.mkdir(exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for r in runs:
        rates = [s["rate"] for s in r["stages"]]
        axes[0].plot(rates, [s["out_tok_s"] for s in r["stages"]], marker="o", label=r["policy"])
        axes[1].plot(rates, [s["ttft_p50_s"] for s in r["stages"]], marker="o", label=r["policy"])
        axes[2].plot(rates, [s["ttft_p90_s"] for s in r["stages"]], marker="o", label=r["policy"])
    for ax, title in zip(axes, ["output tok/s", "TTFT p50 (s)", "TTFT p90 (s)"], strict=True):
        ax.set_xlabel("requested QPS")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("LoRA: 8 x Llama-3.1-8B H100 (sim), 24 adapters Zipf(1.0), max_loras 4")
    fig.tight_layout()
    fig.savefig(out / "throughput_ttft_vs_qps.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    width = 0.8 / len(runs)
    for j, r in enumerate(runs):
        per = r["lora"]["per_replica"]
        xs = [i + j * width for i in range(len(per))]
        axes[0].bar(xs, [v["loads"] for v in per.values()], width=width, label=r["policy"])
        reps = r["lora"]["replicas_per_adapter"]
        axes[1].plot(range(len(reps)), list(reps.values()), marker=".", label=r["policy"])
    axes[0].set_xlabel("replica")
    axes[0].set_title("adapter loads (swaps) per replica, whole run")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("adapter popularity rank (0 = hottest)")
    axes[1].set_title("replicas each adapter was sent to")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "adapter_loads.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    runs = [run_policy(p, args.quick) for p in POLICIES]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "lora.json").write_text(json.dumps(runs, indent=1))
    plots(runs)
    md = HERE / "RESULTS.md"
    text = md.read_text() if md.exists() else "<!-- TABLES -->\n<!-- /TABLES -->\n"
    md.write_text(re.sub(r"<!-- TABLES -->.*<!-- /TABLES -->", lambda _: f"<!-- TABLES -->\n{tables(runs)}\n<!-- /TABLES -->",
                         text, flags=re.S))


if __name__ == "__main__":
    main()
