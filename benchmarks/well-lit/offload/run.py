"""Tiered KV caching on the virtual-time cluster: GPU only vs +CPU tier vs +CPU + shared filesystem.

    PYTHONPATH=src .venv/bin/python benchmarks/well-lit/offload/run.py [--only a|b|c] [--quick]

(a) working set between HBM and HBM+CPU (``cpu-tier.yaml``): GPU-only vs +CPU, mean TTFT and tok/s;
(b) 10 -> 250 users re-sending 16K-token prompts (``fs-users.yaml``): GPU-only vs +CPU vs +CPU+shared FS;
(c) a replica joining a cluster that has been serving (``fs-users.yaml`` at 100 users): TTFT of its first
    requests when it mounts the shared storage the others filled, vs a cold replica without it.
Writes ``results/offload.json`` and ``plots/*.png``; RESULTS.md quotes them. Production scheduler, index
and simulated engines throughout; asserts nothing (benchmarks are not tests).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import yaml

from lanterna.bench.config import ClusterTarget, parse_config
from lanterna.cluster.virtual import VirtualCluster, make_engine
from lanterna.sim.tiers import KVTier

HERE = Path(__file__).resolve().parent
CPU_TIER = {"cpu_gib": 64, "cpu_bandwidth_gbps": 40}
B_CPU = {"cpu_gib": 128, "shared_storage": False, "cpu_bandwidth_gbps": 40}
B_FS = {"cpu_gib": 128, "storage_gib": 4096, "shared_storage": True, "cpu_bandwidth_gbps": 40,
        "storage_bandwidth_gbps": 20}
USERS = [10, 25, 50, 100, 150, 200, 250]
LLMD_A = {"ttft_change": -0.256, "throughput_change": 0.213, "tok_s": [38535, 46751]}
LLMD_B = {"tok_s_sustained": 185_000, "speedup_at_250": 13.9}


def _base(name: str) -> dict[str, Any]:
    out: dict[str, Any] = yaml.safe_load((HERE / name).read_text())
    return out


def _summary(vc: VirtualCluster) -> dict[str, Any]:
    t0 = time.process_time()
    res = vc.run()
    s = res.stages[0].summary
    eng: list[Any] = vc.engines
    return {"total_tok_s": s.throughput.total_tokens_per_s, "input_tok_s": s.throughput.input_tokens_per_s,
            "ttft_mean_s": s.latency.ttft.mean if s.latency.ttft else None,
            "ttft_p50_s": s.latency.ttft.p50 if s.latency.ttft else None,
            "hit_rate": s.prefix_cache_hit_rate, "completed": s.num_completed,
            "storage_hit_tokens": sum(e.stats().num_storage_hit_tokens for e in eng),
            "tier_hit_tokens": sum(e.stats().num_tier_hit_tokens for e in eng),
            "virtual_s": res.extra["virtual_time_s"], "cpu_s": time.process_time() - t0}


def scenario_a(quick: bool) -> dict[str, Any]:
    base = _base("cpu-tier.yaml")
    if quick:
        base["load"]["stages"][0]["duration_s"] = 30
    out = {}
    for label, tiers in (("gpu", None), ("cpu", CPU_TIER)):
        cfg = copy.deepcopy(base)
        cfg["cluster"]["tiers"] = tiers
        out[label] = _summary(VirtualCluster(parse_config(cfg)))
        print("a", label, {k: round(v, 3) if isinstance(v, float) else v for k, v in out[label].items()}, flush=True)
    g, c = out["gpu"], out["cpu"]
    out["ttft_change"] = c["ttft_mean_s"] / g["ttft_mean_s"] - 1
    out["throughput_change"] = c["total_tok_s"] / g["total_tok_s"] - 1
    out["llm-d"] = LLMD_A
    return out


def _users_cfg(users: int, tiers: dict[str, Any] | None, duration_s: float) -> Any:
    cfg = _base("fs-users.yaml")
    cfg["workload"]["num_groups"] = users
    cfg["load"]["warmup"] = {"concurrency": users, "num_requests": users}  # every prompt seen once
    cfg["load"]["stages"] = [{"concurrency": users, "duration_s": duration_s}]
    cfg["cluster"]["tiers"] = tiers
    return parse_config(cfg)


def scenario_b(quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"users": USERS, "llm-d": LLMD_B}
    for label, tiers in (("gpu", None), ("cpu", B_CPU), ("cpu+fs", B_FS)):
        out[label] = []
        for u in USERS:
            r = _summary(VirtualCluster(_users_cfg(u, tiers, 20 if quick else 60)))
            out[label].append(r)
            print("b", label, u, round(r["total_tok_s"]), round(r["ttft_mean_s"], 3), round(r["hit_rate"], 3),
                  f"cpu {r['cpu_s']:.1f}s", flush=True)
    g, f = out["gpu"][-1], out["cpu+fs"][-1]
    out["fs_speedup_at_250"] = f["total_tok_s"] / g["total_tok_s"]
    out["fs_ttft_ratio_at_250"] = g["ttft_mean_s"] / f["ttft_mean_s"]
    return out


def scenario_c(quick: bool) -> dict[str, Any]:
    """Phase 1: 4 replicas serve 100 users with the shared FS. Phase 2: one new replica takes the same
    users' next requests (8 in flight), mounting that storage (hydrated) or not (cold)."""
    warm = VirtualCluster(_users_cfg(100, B_FS, 20 if quick else 60))
    warm.run()
    storage = warm.storage
    assert storage is not None
    out: dict[str, Any] = {"storage_blocks_after_phase1": len(storage)}
    for label, tiers in (("cold", None), ("hydrated", B_FS)):
        cfg = _base("fs-users.yaml")
        cfg["workload"]["num_groups"] = 100
        cfg["load"] = {"type": "concurrency", "stages": [{"concurrency": 8, "num_requests": 32}]}
        cfg["cluster"]["replicas"] = 1
        cfg["cluster"]["tiers"] = tiers

        def factory(c: ClusterTarget, seed: int, _own: KVTier | None = None) -> Any:
            return make_engine(c, seed, storage if c.tiers is not None else None)

        vc = VirtualCluster(parse_config(cfg), factory)
        res = vc.run()
        recs = sorted(res.stages[0].records, key=lambda r: r.send_s)
        ttfts = [r.ttft_s for r in recs if r.ttft_s is not None]
        out[label] = {"ttft_s": ttfts, "ttft_mean_s": sum(ttfts) / len(ttfts),
                      "ttft_first8_mean_s": sum(ttfts[:8]) / 8,
                      "cached_tokens_mean": sum(r.cached_tokens for r in recs) / len(recs)}
        print("c", label, round(out[label]["ttft_mean_s"], 3), round(out[label]["cached_tokens_mean"]), flush=True)
    return out


def plots(res: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = HERE / "plots"
    d.mkdir(exist_ok=True)
    if "a" in res:
        a = res["a"]
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
        ax[0].bar(["GPU only", "+CPU"], [a["gpu"]["ttft_mean_s"], a["cpu"]["ttft_mean_s"]], color=["#999", "#3a7"])
        ax[0].set_title(f"mean TTFT (s): {a['ttft_change']:+.1%} (llm-d {LLMD_A['ttft_change']:+.1%})")
        ax[1].bar(["GPU only", "+CPU"], [a["gpu"]["total_tok_s"], a["cpu"]["total_tok_s"]], color=["#999", "#3a7"])
        ax[1].set_title(f"tok/s: {a['throughput_change']:+.1%} (llm-d {LLMD_A['throughput_change']:+.1%})")
        fig.suptitle("(a) working set between HBM and HBM+CPU, 2 x Qwen3-32B TP2 (simulated)")
        fig.tight_layout()
        fig.savefig(d / "a_cpu_tier.png", dpi=110)
        plt.close(fig)
    if "b" in res:
        b = res["b"]
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
        for label, color in (("gpu", "#999"), ("cpu", "#37a"), ("cpu+fs", "#3a7")):
            ax[0].plot(b["users"], [r["total_tok_s"] / 1e3 for r in b[label]], "o-", color=color, label=label)
            ax[1].plot(b["users"], [r["ttft_mean_s"] for r in b[label]], "o-", color=color, label=label)
        ax[0].axhline(LLMD_B["tok_s_sustained"] / 1e3, ls="--", color="#a73", label="llm-d FS post ~185k")
        ax[0].set(xlabel="users (16K-token prompts)", ylabel="k tok/s")
        ax[1].set(xlabel="users (16K-token prompts)", ylabel="mean TTFT (s)", yscale="log")
        ax[0].legend(fontsize=8)
        ax[1].legend(fontsize=8)
        fig.suptitle("(b) 4 x Llama-3.1-70B TP4, HBM -> +128 GiB CPU -> +shared FS (simulated)")
        fig.tight_layout()
        fig.savefig(d / "b_users.png", dpi=110)
        plt.close(fig)
    if "c" in res:
        c = res["c"]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for label, color in (("cold", "#999"), ("hydrated", "#3a7")):
            ax.plot(range(1, len(c[label]["ttft_s"]) + 1), c[label]["ttft_s"], "o-", color=color, label=label)
        ax.set(xlabel="request # on the new replica", ylabel="TTFT (s)",
               title="(c) new replica: shared storage (hydrated) vs cold")
        ax.legend()
        fig.tight_layout()
        fig.savefig(d / "c_join.png", dpi=110)
        plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", choices=["a", "b", "c"], action="append")
    ap.add_argument("--quick", action="store_true", help="shorter stages (a smoke run)")
    args = ap.parse_args()
    path = HERE / "results" / "offload.json"
    res: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    for name, fn in (("a", scenario_a), ("b", scenario_b), ("c", scenario_c)):
        if not args.only or name in args.only:
            res[name] = fn(args.quick)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    plots(res)


if __name__ == "__main__":
    main()
