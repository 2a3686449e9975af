"""PNG plots from run reports: latency vs QPS, throughput vs QPS, throughput vs latency, policy bars.

matplotlib with the Agg backend (no display); one line per run, labelled by policy (virtual runs) or
run name. Stages without a requested rate (concurrency, trace) plot against achieved rate. matplotlib is the
``[bench]`` extra: importing this module without it is one ``ConfigError`` line that says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lanterna.errors import ConfigError

try:
    import matplotlib
except ModuleNotFoundError:
    raise ConfigError("plots need matplotlib: pip install 'lanterna[bench]'") from None

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from lanterna.bench.compare import run_label


def _series(rep: dict[str, Any]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"qps": [], "tps": [], "p50": [], "p90": []}
    for st in rep["stages"]:
        ttft = st["latency_s"]["ttft"]
        if ttft is None:
            continue
        out["qps"].append(st.get("requested_rate") or st.get("achieved_rate") or 0.0)
        out["tps"].append(st["throughput"]["output_tokens_per_s"])
        out["p50"].append(ttft["p50"])
        out["p90"].append(ttft["p90"])
    return out


def plot_runs(reports: list[dict[str, Any]], out_dir: Path, title: str = "") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    series = [(run_label(r), _series(r)) for r in reports]
    paths = []

    def save(fig: Any, name: str) -> None:
        p = out_dir / name
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, s in series:
        line = ax.plot(s["qps"], s["p50"], marker="o", label=f"{label} p50")[0]
        ax.plot(s["qps"], s["p90"], marker="x", ls="--", color=line.get_color(), label=f"{label} p90")
    ax.set(xlabel="requested QPS", ylabel="TTFT (s)", yscale="log", title=f"{title} TTFT vs QPS")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    save(fig, "latency_vs_qps.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, s in series:
        ax.plot(s["qps"], s["tps"], marker="o", label=label)
    ax.set(xlabel="requested QPS", ylabel="output tokens/s", title=f"{title} throughput vs QPS")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, "throughput_vs_qps.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, s in series:
        ax.plot(s["p50"], s["tps"], marker="o", label=label)
    ax.set(xlabel="TTFT p50 (s)", ylabel="output tokens/s", xscale="log", title=f"{title} throughput vs latency")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, "throughput_vs_latency.png")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4))
    labels = [lab for lab, s in series if s["tps"]]
    top = [s for _, s in series if s["tps"]]
    a1.bar(labels, [s["tps"][-1] for s in top], color="tab:blue")
    a1.set(ylabel="output tokens/s", title="throughput at highest QPS")
    a2.bar(labels, [s["p50"][-1] for s in top], color="tab:orange")
    a2.set(ylabel="TTFT p50 (s)", yscale="log", title="TTFT p50 at highest QPS")
    for a in (a1, a2):
        a.tick_params(axis="x", rotation=30, labelsize=7)
    save(fig, "policy_comparison.png")
    return paths
