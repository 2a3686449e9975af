"""SLO-aware routing on the virtual-time cluster: predicted latency vs prefix+load weights vs ``lanterna``.

    PYTHONPATH=src .venv/bin/python benchmarks/well-lit/slo/run.py [--only 4to1|400to1|mixed] [--quick]

(a) ``4to1`` and ``400to1``: 6 x Qwen3-32B TP2 (simulated H100s), shared-prefix prompts at 4:1 and 400:1 ISL:OSL,
    a Poisson rate ladder; every request carries the scenario's TTFT/TPOT SLO headers. Per policy and rate: P90
    TTFT, TPOT, SLO attainment, the achievable-TTFT bound (``cluster/slo.py``: every reusable prefix hits, no
    wait) and the latency predictor's MAPE.
(b) ``mixed``: three traffic classes through flow control with slo-deadline ordering: interactive (tight SLO),
    standard (loose SLO) and sheddable batch (priority -1, SLO): attainment per class, shed counts, goodput.
Writes ``results/slo.json`` and ``plots/*.png``; RESULTS.md quotes them. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from lanterna.bench.config import parse_config
from lanterna.bench.workloads import iter_workload
from lanterna.cluster.slo import slo_attainment, ttft_bounds
from lanterna.cluster.virtual import VirtualCluster

HERE = Path(__file__).resolve().parent
POLICIES = ["prefix-load", "lanterna", "predicted-latency"]
PROFILE = "qwen3-32b-tp2-h100"
SCENARIOS: dict[str, dict[str, Any]] = {
    "4to1": {"workload": {"type": "shared-prefix", "num_groups": 60, "prompts_per_group": 10, "system_len": 3000,
                          "question_len": 1000, "output_len": 1000},
             "rates": [16, 32, 48], "slo": (1000, 60)},
    "400to1": {"workload": {"type": "shared-prefix", "num_groups": 60, "prompts_per_group": 10, "system_len": 6000,
                            "question_len": 2000, "output_len": 20},
               "rates": [10, 20, 30, 40], "slo": (1000, 100)},
}
MIXED = {"workload": SCENARIOS["400to1"]["workload"], "rate": 36,
         "classes": [{"name": "interactive", "priority": 0, "weight": 2, "slo_ttft_ms": 500, "slo_tpot_ms": 50},
                     {"name": "standard", "priority": 0, "weight": 2, "slo_ttft_ms": 3000, "slo_tpot_ms": 100},
                     {"name": "batch", "priority": -1, "weight": 1, "slo_ttft_ms": 2000, "slo_tpot_ms": 100}]}
LLMD = "llm-d: up to 3x better P90 TTFT in long-prefill workloads; better SLO attainment for sheddable traffic"


def _cfg(workload: dict[str, Any], rate: float, duration_s: float, policy: str, classes: list[dict[str, Any]],
         ordering: str = "fcfs") -> Any:
    return parse_config({
        "name": "slo", "seed": 7, "workload": workload,
        "load": {"type": "poisson", "warmup": {"rate": rate, "duration_s": 10},
                 "stages": [{"rate": rate, "duration_s": duration_s}]},
        "cluster": {"replicas": 6, "profile": PROFILE, "policy": policy, "scrape_interval_s": 0.05,
                    "flow_control": {"enabled": True, "ordering": ordering, "classes": classes}},
        "keep_records": 0})


def _pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def _run(cfg: Any, slos: dict[str | None, tuple[float | None, float | None]]) -> dict[str, Any]:
    t0 = time.process_time()
    vc = VirtualCluster(cfg)
    res = vc.run()
    st = res.stages[0]
    s, recs = st.summary, st.records
    ttft = [r.ttft_s for r in recs if r.ttft_s is not None and r.error is None]
    tpot = [r.tpot_s for r in recs if r.tpot_s is not None and r.error is None]
    return {"ttft_p50_s": _pct(ttft, 50), "ttft_p90_s": _pct(ttft, 90), "ttft_p99_s": _pct(ttft, 99),
            "tpot_p50_s": _pct(tpot, 50), "tpot_p90_s": _pct(tpot, 90),
            "output_tok_s": s.throughput.output_tokens_per_s, "completed": s.num_completed,
            "failures": s.failures, "hit_rate": s.prefix_cache_hit_rate,
            "slo": slo_attainment(recs, slos), "prediction": res.extra.get("prediction"),
            "first_index": min((int(r.request_id[1:]) for r in recs), default=0), "num_records": len(recs),
            "duration_s": s.duration_s,
            "cpu_s": round(time.process_time() - t0, 1)}


def _bound_p90(workload: dict[str, Any], first: int, n: int) -> float:
    """P90 of the achievable TTFT over the measured requests (arrival order = workload order)."""
    cfg = _cfg(workload, 1, 1, "round-robin", [])
    items = iter_workload(cfg.workload, cfg.seed)
    b = ttft_bounds((next(items) for _ in range(first + n)), PROFILE)
    return float(np.percentile(b[first:], 90))


def scenario_ratio(name: str, quick: bool) -> dict[str, Any]:
    sc = SCENARIOS[name]
    ttft_ms, tpot_ms = sc["slo"]
    classes = [{"name": "slo", "slo_ttft_ms": ttft_ms, "slo_tpot_ms": tpot_ms}]
    slos: dict[str | None, tuple[float | None, float | None]] = {"slo": (ttft_ms / 1e3, tpot_ms / 1e3)}
    out: dict[str, Any] = {"slo_ms": sc["slo"], "workload": sc["workload"], "rates": {}}
    for rate in sc["rates"][:2] if quick else sc["rates"]:
        row: dict[str, Any] = {}
        for pol in POLICIES:
            row[pol] = _run(_cfg(sc["workload"], rate, 20 if quick else 40, pol, classes), slos)
            print(name, rate, pol, {k: v for k, v in row[pol].items() if k not in ("failures",)}, flush=True)
        any_run = row[POLICIES[0]]
        row["bound_ttft_p90_s"] = _bound_p90(sc["workload"], any_run["first_index"], any_run["num_records"])
        out["rates"][str(rate)] = row
    return out


def scenario_mixed(quick: bool) -> dict[str, Any]:
    slos = {c["name"]: (c["slo_ttft_ms"] / 1e3, c["slo_tpot_ms"] / 1e3) for c in MIXED["classes"]}
    out: dict[str, Any] = {"classes": MIXED["classes"], "rate": MIXED["rate"], "runs": {}}
    for pol, ordering in (("prefix-load", "fcfs"), ("lanterna", "fcfs"), ("predicted-latency", "slo-deadline")):
        r = _run(_cfg(MIXED["workload"], MIXED["rate"], 20 if quick else 40, pol, MIXED["classes"], ordering), slos)
        out["runs"][f"{pol}/{ordering}"] = r
        print("mixed", pol, ordering, r["slo"], r["failures"], flush=True)
    return out


def plots(data: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (HERE / "plots").mkdir(exist_ok=True)
    for name in ("4to1", "400to1"):
        if name not in data:
            continue
        rates = sorted(data[name]["rates"], key=float)
        fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
        for pol in POLICIES:
            rows = [data[name]["rates"][r][pol] for r in rates]
            x = [float(r) for r in rates]
            ax[0].plot(x, [row["ttft_p90_s"] for row in rows], marker="o", label=pol)
            ax[1].plot(x, [row["tpot_p90_s"] * 1e3 for row in rows], marker="o", label=pol)
            ax[2].plot(x, [row["slo"]["slo"]["attainment"] * 100 for row in rows], marker="o", label=pol)
        ax[0].plot([float(r) for r in rates], [data[name]["rates"][r]["bound_ttft_p90_s"] for r in rates], "k--",
                   label="achievable bound")
        ax[0].set(title=f"{name}: P90 TTFT", xlabel="QPS", ylabel="s", yscale="log")
        ax[1].set(title="P90 TPOT", xlabel="QPS", ylabel="ms")
        slo = data[name]["slo_ms"]
        ax[2].set(title=f"SLO attainment (TTFT {slo[0]} ms, TPOT {slo[1]} ms)", xlabel="QPS", ylabel="%", ylim=(0, 105))
        for a in ax:
            a.grid(alpha=0.3)
            a.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(HERE / "plots" / f"{name}.png", dpi=110)
        plt.close(fig)
    if "mixed" in data:
        runs = data["mixed"]["runs"]
        classes = [c["name"] for c in data["mixed"]["classes"]]
        fig, ax = plt.subplots(figsize=(8, 4.2))
        w = 0.8 / len(runs)
        for i, (label, r) in enumerate(runs.items()):
            ax.bar([j + i * w for j in range(len(classes))],
                   [r["slo"].get(c, {}).get("attainment", 0) * 100 for c in classes], w, label=label)
        ax.set_xticks([j + w * (len(runs) - 1) / 2 for j in range(len(classes))], classes)
        ax.set(title=f"mixed SLO traffic at {data['mixed']['rate']} QPS: SLO attainment per class", ylabel="%",
               ylim=(0, 105))
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(HERE / "plots" / "mixed.png", dpi=110)
        plt.close(fig)


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def tables(data: dict[str, Any]) -> str:
    """The RESULTS.md tables from ``results/slo.json``."""
    out = []
    for name in ("4to1", "400to1"):
        if name not in data:
            continue
        d = data[name]
        w = d["workload"]
        out.append(f"### {name}: ISL {w['system_len'] + w['question_len']} (shared system {w['system_len']}) : "
                   f"OSL {w['output_len']}, SLO TTFT {d['slo_ms'][0]} ms / TPOT {d['slo_ms'][1]} ms\n")
        out.append("| QPS | policy | P90 TTFT s (completed) | bound P90 s | bound / P90 | P50 TTFT s | P90 TPOT ms "
                   "| failed | SLO met (failed = missed) | prefix hit | TTFT MAPE | TPOT MAPE | P90 vs prefix-load |")
        out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for rate in sorted(d["rates"], key=float):
            row = d["rates"][rate]
            bound = row["bound_ttft_p90_s"]
            base = row["prefix-load"]["ttft_p90_s"]
            for pol in POLICIES:
                r = row[pol]
                pr = r.get("prediction") or {}
                out.append(f"| {rate} | {pol} | {r['ttft_p90_s']:.3f} | {bound:.3f} | {bound / r['ttft_p90_s']:.0%} "
                           f"| {r['ttft_p50_s']:.3f} | {r['tpot_p90_s'] * 1e3:.1f} | {sum(r['failures'].values())} "
                           f"| {r['slo']['slo']['attainment']:.1%} "
                           f"| {_f(r['hit_rate'], '.3f')} | {_f(pr.get('ttft_mape'), '.1%')} "
                           f"| {_f(pr.get('tpot_mape'), '.1%')} | {base / r['ttft_p90_s']:.2f}x |")
        out.append("")
    if "mixed" in data:
        m = data["mixed"]
        cls = ", ".join(f"{c['name']} (priority {c['priority']}, weight {c['weight']}, TTFT {c['slo_ttft_ms']} ms, "
                        f"TPOT {c['slo_tpot_ms']} ms)" for c in m["classes"])
        out.append(f"### mixed SLO traffic at {m['rate']} QPS: {cls}\n")
        names = [c["name"] for c in m["classes"]]
        out.append("| policy / ordering | " + " | ".join(f"{n} met" for n in names)
                   + " | batch shed | all met | goodput req/s | TTFT MAPE |")
        out.append("|---|" + "---:|" * (len(names) + 4))
        for label, r in m["runs"].items():
            sl = r["slo"]
            n = sum(v["requests"] for v in sl.values())
            met = sum(v["met"] for v in sl.values())
            shed = sum(c for k, c in r["failures"].items() if k.startswith("rejected"))
            pr = r.get("prediction") or {}
            out.append(f"| {label} | " + " | ".join(_f(sl.get(k, {}).get("attainment"), ".1%") for k in names)
                       + f" | {shed} | {met / n:.1%} | {met / r['duration_s']:.2f} | {_f(pr.get('ttft_mape'), '.1%')} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["4to1", "400to1", "mixed"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tables", action="store_true", help="print the RESULTS.md tables from results/slo.json")
    args = ap.parse_args()
    path = HERE / "results" / "slo.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if args.tables:
        print(tables(data))
        return
    for name in ("4to1", "400to1"):
        if args.only in (None, name):
            data[name] = scenario_ratio(name, args.quick)
    if args.only in (None, "mixed"):
        data["mixed"] = scenario_mixed(args.quick)
    data["llm-d"] = LLMD
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
    plots(data)


if __name__ == "__main__":
    main()
