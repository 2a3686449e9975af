"""Real-time cross-check: the inference-scheduling scenario (shared prefix), scaled down, run both in the
virtual-time cluster and for real through the gateway (processes, HTTP), must agree within 15% on output
throughput and on the TTFT ranking of the policies.

    .venv/bin/python benchmarks/realtime_crosscheck.py                       # ~3 min on 2 CPU cores
    .venv/bin/python benchmarks/realtime_crosscheck.py --rates 8,16 --time-scale 2 --policies round-robin,lanterna

Both sides use the same workload and seed, the same replica count, profile and physics step timer, the same
policy configs (``cluster.policies``) and the same arrival schedule (constant rate: a Poisson draw would
differ between the two sides' generators). The real side slows simulated time by
``--time-scale`` (sims sleep ``scale x`` each step; rates are divided and durations multiplied by it) so
that the gateway's and client's CPU costs on a small shared machine stay small next to step times; measured
throughput is multiplied back and TTFT divided back. Prompts are sent as token ids (completions API) so the
replicas see exactly the virtual cluster's tokens.

Differences expected by design: real scrapes and KV events arrive a little later than virtual ones, and
HTTP adds a few ms of latency (divided by the time scale).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import routing_quality as rq  # noqa: E402

from lanterna.bench.config import BenchConfig, parse_config  # noqa: E402
from lanterna.bench.runner import HttpRunner  # noqa: E402
from lanterna.bench.workloads import WorkItem  # noqa: E402
from lanterna.cluster.virtual import run_virtual  # noqa: E402

MODEL = "sim-model"


class TokenRenderer:
    """Renders a work item as its token ids (vLLM's completions API takes ``prompt: [int, ...]``)."""

    def prompt(self, item: WorkItem) -> list[int]:
        return item.token_ids()

    def messages(self, item: WorkItem) -> list[dict[str, Any]]:  # pragma: no cover - completions only
        raise NotImplementedError


def scenario(args: argparse.Namespace, target: dict[str, Any], scale: float) -> BenchConfig:
    return parse_config({
        "name": "realtime-crosscheck", "seed": args.seed,
        "workload": {"type": "shared-prefix", "num_groups": args.groups, "prompts_per_group": args.prompts_per_group,
                     "system_len": args.system_len, "question_len": args.question_len, "output_len": args.output_len},
        "load": {"type": "constant",
                 "stages": [{"rate": r / scale, "duration_s": args.duration_s * scale} for r in args.rates]},
        **target,
    })


def stage_figures(res: Any, scale: float) -> list[dict[str, Any]]:
    out = []
    for st in res.stages:
        s = st.summary
        ttft = s.latency.ttft
        out.append({"rate": (s.requested_rate or 0) * scale,
                    "output_tokens_per_s": s.throughput.output_tokens_per_s * scale,
                    "ttft_p50_s": (ttft.p50 if ttft else float("nan")) / scale,
                    "ttft_mean_s": (ttft.mean if ttft else float("nan")) / scale,
                    "hit_rate": s.prefix_cache_hit_rate, "num_ok": s.num_completed,
                    "num_failed": s.num_failed})
    return out


def run_virtual_side(args: argparse.Namespace, policy: str) -> list[dict[str, Any]]:
    cluster = {"replicas": args.replicas, "profile": args.profile, "policy": policy, "model": MODEL,
               "scrape_interval_s": 0.075, "precise_tokens": policy.startswith("precise")}
    return stage_figures(run_virtual(scenario(args, {"cluster": cluster}, 1.0)), 1.0)


async def run_real_side(args: argparse.Namespace, policy: str, reps: rq.Replicas, logdir: Path) -> list[dict[str, Any]]:
    proc = await asyncio.to_thread(rq.start_router, f"lanterna:{policy}", reps, logdir)
    try:
        import aiohttp

        async with aiohttp.ClientSession() as s:
            await rq.reset_caches(s, reps)
        cfg = scenario(args, {"target": {"url": proc.url, "model": MODEL, "api": "completions"}}, args.time_scale)
        res = await HttpRunner(cfg, progress=False, renderer=TokenRenderer()).run()  # type: ignore[arg-type]
    finally:
        rq.peers.stop(proc)
    return stage_figures(res, args.time_scale)


def ranking(rows: dict[str, list[dict[str, Any]]], i: int, key: str = "ttft_mean_s") -> list[str]:
    return sorted(rows, key=lambda p: rows[p][i][key])


def compare(virtual: dict[str, list[dict[str, Any]]], real: dict[str, list[dict[str, Any]]],
            tolerance: float) -> dict[str, Any]:
    levels = []
    for i, rate in enumerate(r["rate"] for r in next(iter(virtual.values()))):
        per_policy = {}
        for p in virtual:
            v, r = virtual[p][i], real[p][i]
            err = abs(r["output_tokens_per_s"] - v["output_tokens_per_s"]) / v["output_tokens_per_s"]
            per_policy[p] = {"throughput_rel_err": err, "throughput_ok": err <= tolerance,
                             "ttft_ratio_real_to_virtual": r["ttft_mean_s"] / v["ttft_mean_s"]}
        rv, rr = ranking(virtual, i), ranking(real, i)
        levels.append({"rate": rate, "policies": per_policy, "ttft_ranking_virtual": rv, "ttft_ranking_real": rr,
                       "ranking_agrees": rv == rr})
    ok = all(lv["ranking_agrees"] and all(x["throughput_ok"] for x in lv["policies"].values()) for lv in levels)
    return {"tolerance": tolerance, "levels": levels, "agrees": ok}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    policies = args.policies.split(",")
    virtual, real = {}, {}
    for p in policies:
        t = time.perf_counter()
        virtual[p] = run_virtual_side(args, p)
        rq.say(f"[virtual {p}] {time.perf_counter() - t:.1f}s wall")
    sim_args = ["--profile", args.profile, "--timing", "physics", "--time-scale", str(args.time_scale)]
    with tempfile.TemporaryDirectory(prefix="lanterna-xcheck-") as tmp:
        rq.say(f"starting {args.replicas} sims ({' '.join(sim_args)}) ...")
        async with rq.sim_replicas(args.replicas, sim_args, MODEL) as reps:
            for p in policies:
                t = time.perf_counter()
                rq.say(f"[real {p}] {len(args.rates)} stages x {args.duration_s * args.time_scale:g}s ...")
                real[p] = await run_real_side(args, p, reps, Path(tmp))
                rq.say(f"[real {p}] {time.perf_counter() - t:.1f}s wall")
    return {"config": {k: v for k, v in vars(args).items() if k != "out"}, "virtual": virtual, "real": real,
            "comparison": compare(virtual, real, args.tolerance)}


def print_report(res: dict[str, Any]) -> None:
    print(f"\n{'rate':>5} {'policy':14} {'virt tok/s':>10} {'real tok/s':>10} {'err':>6} "
          f"{'virt TTFT ms':>12} {'real TTFT ms':>12} {'virt hit':>8} {'real hit':>8}")
    cmp_ = res["comparison"]
    for i, lv in enumerate(cmp_["levels"]):
        for p, c in lv["policies"].items():
            v, r = res["virtual"][p][i], res["real"][p][i]
            print(f"{lv['rate']:5g} {p:14} {v['output_tokens_per_s']:10.0f} {r['output_tokens_per_s']:10.0f} "
                  f"{c['throughput_rel_err']:6.1%} {v['ttft_mean_s'] * 1e3:12.1f} {r['ttft_mean_s'] * 1e3:12.1f} "
                  f"{v['hit_rate'] or 0:8.3f} {r['hit_rate'] or 0:8.3f}")
        print(f"      TTFT ranking virtual {lv['ttft_ranking_virtual']} real {lv['ttft_ranking_real']} "
              f"-> {'agree' if lv['ranking_agrees'] else 'DIFFER'}")
    print(f"\nagreement within {cmp_['tolerance']:.0%} and same TTFT ranking: {cmp_['agrees']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument
    a("--replicas", type=int, default=4)
    a("--profile", default="qwen3-32b-tp2-h100")
    a("--policies", default="round-robin,lanterna")
    a("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[6.0, 12.0, 24.0],
      help="virtual-time QPS levels")
    a("--duration-s", type=float, default=6.0, help="virtual seconds per stage")
    a("--time-scale", type=float, default=3.0, help="real seconds per simulated second on the real side")
    rq.add_shared_prefix_args(ap)
    a("--tolerance", type=float, default=0.15)
    a("--out", type=Path, default=rq.RESULTS / "realtime_crosscheck.json")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    res = asyncio.run(main_async(args))
    print_report(res)
    rq.write_json(args.out, res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
