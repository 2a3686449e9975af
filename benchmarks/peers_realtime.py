"""Peers side by side in real time: Lanterna's policies, vllm-router (cache_aware, round_robin) and smg
(cache_aware) in front of the SAME simulated replicas, with the same workload and schedule, one after another.

    .venv/bin/python benchmarks/peers_realtime.py                      # ~2-3 min on 2 CPU cores
    .venv/bin/python benchmarks/peers_realtime.py --rate 16 --duration-s 10 --routers lanterna:lanterna,smg:cache_aware

Workload: the inference-scheduling shape scaled down (shared prefix: G groups x P prompts, text prompts
through the completions API, so text-based routers see real shared prefixes), constant rate. Replicas:
``lanterna sim`` with a physics profile (optionally time-scaled). Before each router the replicas' prefix
caches are reset, so every router starts cold. Reports TTFT p50/p90, output throughput, prefix hit rate and
requests per replica per router, and ratios to Lanterna's recommended policy; JSON + a PNG bar plot.
Peers come from ``scripts/setup_peers.sh`` (.venv-peers); without it only Lanterna's rows are measured.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import routing_quality as rq  # noqa: E402

from lanterna.bench.config import parse_config  # noqa: E402
from lanterna.bench.runner import HttpRunner  # noqa: E402

MODEL = "sim-model"
DEFAULT_ROUTERS = ("lanterna:lanterna", "lanterna:llm-d-default", "lanterna:precise", "lanterna:round-robin",
                   *rq.PEER_POLICIES)
BASELINE = "lanterna:lanterna"


async def run_router(router: str, reps: rq.Replicas, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    proc = await asyncio.to_thread(rq.start_router, router, reps, logdir)
    try:
        async with aiohttp.ClientSession() as s:
            await rq.reset_caches(s, reps)
            before = await rq.replica_counters(s, reps)
        ts = args.time_scale
        cfg = parse_config({
            "name": f"peers-{router}", "seed": args.seed,
            "workload": {"type": "shared-prefix", "num_groups": args.groups, "prompts_per_group": args.prompts_per_group,
                         "system_len": args.system_len, "question_len": args.question_len,
                         "output_len": args.output_len},
            "load": {"type": "constant", "stages": [{"rate": args.rate / ts, "duration_s": args.duration_s * ts}]},
            "target": {"url": proc.url, "model": MODEL, "api": "completions"},
        })
        res = await HttpRunner(cfg, progress=False).run()
        async with aiohttp.ClientSession() as s:
            after = await rq.replica_counters(s, reps)
    finally:
        rq.peers.stop(proc)
    s = res.stages[0].summary
    ttft = s.latency.ttft
    per = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
    return {"router": router, "num_requests": s.num_requests, "num_ok": s.num_completed,
            "failures": s.failures, "ttft_p50_s": (ttft.p50 if ttft else math.nan) / ts,
            "ttft_p90_s": (ttft.p90 if ttft else math.nan) / ts,
            "output_tokens_per_s": s.throughput.output_tokens_per_s * ts,
            "hit_rate": s.prefix_cache_hit_rate, "requests_per_replica": per, "balance": rq.balance(per)}


def add_ratios(rows: list[dict[str, Any]]) -> None:
    base = next((r for r in rows if r["router"] == BASELINE and "ttft_p50_s" in r), None)
    for r in rows:
        if base is None or "ttft_p50_s" not in r:
            continue
        r["ttft_p50_vs_lanterna"] = r["ttft_p50_s"] / base["ttft_p50_s"]
        r["ttft_p90_vs_lanterna"] = r["ttft_p90_s"] / base["ttft_p90_s"]
        r["throughput_vs_lanterna"] = r["output_tokens_per_s"] / base["output_tokens_per_s"]


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "ttft_p50_s" in r]
    names = [r["router"].replace("lanterna:", "L:") for r in ok]
    x = range(len(ok))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    w = 0.4
    ax1.bar([i - w / 2 for i in x], [r["ttft_p50_s"] * 1e3 for r in ok], w, label="p50")
    ax1.bar([i + w / 2 for i in x], [r["ttft_p90_s"] * 1e3 for r in ok], w, label="p90")
    ax1.set_ylabel("TTFT (ms)")
    ax1.legend()
    ax2.bar(list(x), [r["output_tokens_per_s"] for r in ok], 0.6, color="tab:green")
    ax2.set_ylabel("output tokens/s")
    for ax in (ax1, ax2):
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    fig.suptitle("Routers in front of the same 4 simulated replicas (real time)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    routers = [r for r in args.routers.split(",") if r]
    if not rq.peers_available():
        rq.say("peers venv missing (scripts/setup_peers.sh): vllm-router and smg skipped")
        routers = [r for r in routers if r.startswith("lanterna:")]
    sim_args = ["--profile", args.profile, "--timing", "physics", "--time-scale", str(args.time_scale)]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lanterna-peers-rt-") as tmp:
        rq.say(f"starting {args.replicas} sims ({' '.join(sim_args)}) ...")
        async with rq.sim_replicas(args.replicas, sim_args, MODEL) as reps:
            for router in routers:
                rq.say(f"[{router}] {args.rate:g} req/s for {args.duration_s * args.time_scale:g}s ...")
                try:
                    rows.append(await run_router(router, reps, args, Path(tmp)))
                except RuntimeError as exc:
                    rq.say(f"[{router}] failed: {str(exc).splitlines()[0]}")
                    rows.append({"router": router, "error": str(exc)[:500]})
    add_ratios(rows)
    return {"config": {k: v for k, v in vars(args).items() if k not in ("out", "plot")}, "rows": rows}


def print_table(res: dict[str, Any]) -> None:
    print(f"\n{'router':26} {'TTFT p50':>9} {'p90':>8} {'tok/s':>7} {'hit':>6} {'balance':>7} "
          f"{'p50 x':>6} {'p90 x':>6} {'tput x':>6} {'ok':>8}")
    for r in res["rows"]:
        if "ttft_p50_s" not in r:
            print(f"{r['router']:26} failed")
            continue
        print(f"{r['router']:26} {r['ttft_p50_s'] * 1e3:7.1f}ms {r['ttft_p90_s'] * 1e3:6.1f}ms "
              f"{r['output_tokens_per_s']:7.0f} {r['hit_rate'] or 0:6.3f} {r['balance']:7.2f} "
              f"{r.get('ttft_p50_vs_lanterna', math.nan):6.2f} {r.get('ttft_p90_vs_lanterna', math.nan):6.2f} "
              f"{r.get('throughput_vs_lanterna', math.nan):6.2f} {r['num_ok']:>4}/{r['num_requests']:<4}")
    print("(x = ratio to lanterna:lanterna; TTFT below 1.0 is better than Lanterna's recommended policy)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument
    a("--routers", default=",".join(DEFAULT_ROUTERS))
    a("--replicas", type=int, default=4)
    a("--profile", default="qwen3-32b-tp2-h100")
    a("--time-scale", type=float, default=2.0, help="real seconds per simulated second")
    a("--rate", type=float, default=16.0, help="requests per simulated second")
    a("--duration-s", type=float, default=8.0, help="simulated seconds per router")
    rq.add_shared_prefix_args(ap)
    a("--out", type=Path, default=rq.RESULTS / "peers_realtime.json")
    a("--plot", type=Path, default=rq.RESULTS / "peers_realtime.png")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    res = asyncio.run(main_async(args))
    print_table(res)
    rq.write_json(args.out, res)
    plot(res["rows"], args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
