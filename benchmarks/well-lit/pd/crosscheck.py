"""Real-time cross-check of one well-lit P/D point: the same scaled-down scenario in the virtual cluster and
through real processes (``lanterna gateway`` + ``lanterna sim --role prefill|decode``, HTTP, KV pulled over a
socket), compared on TTFT p50/p90, ITL p50/p99 and output throughput (real / virtual ratios).

    PYTHONPATH=src .venv/bin/python benchmarks/well-lit/pd/crosscheck.py            # ~6 min on 2 CPU cores
    PYTHONPATH=src .venv/bin/python benchmarks/well-lit/pd/crosscheck.py --decode 2 --rate 3 --time-scale 5

Same as ``run.py`` (profile, physics step timer, 20:1 ISL:OSL = 4,000 +-20% / 200 tokens, P/D
EndpointPickerConfig with ``nonCachedTokens`` 0, RDMA link model) but 1 prefill + ``--decode`` decode replicas
and, as a second treatment, aggregated serving (``llm-d-default``) on the same number of replicas. Both sides get
the same Poisson arrival offsets: the real runner's arrival generator is seeded as the virtual cluster's
(``seed + 1``), so only the time scale separates them. As in ``benchmarks/realtime_crosscheck.py``, the real
side slows simulated time by ``--time-scale`` (steps and KV transfers sleep ``scale x``; the rate is divided by
it) so that the gateway's, sims' and client's CPU on a small shared machine stays small next to step times;
latencies are divided back and throughput multiplied back. Prompts go as token ids (completions API, streamed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent.parent
sys.path.insert(0, str(BENCH))
import realtime_crosscheck as rc  # noqa: E402
import routing_quality as rq  # noqa: E402

from lanterna.bench.config import BenchConfig  # noqa: E402
from lanterna.bench.runner import HttpRunner  # noqa: E402
from lanterna.cluster.launcher import Replica, SimLauncher  # noqa: E402
from lanterna.cluster.policies import pd_policy_doc, resolve_policy  # noqa: E402
from lanterna.cluster.virtual import run_virtual  # noqa: E402
from lanterna.endpoints.types import ROLE_LABEL  # noqa: E402

MODEL = "sim-model"
PROFILE = "qwen3-32b-tp2-h100"
KEYS = ("ttft_p50_s", "ttft_p90_s", "itl_p50_s", "itl_p99_s", "output_tokens_per_s")


def scenario(args: argparse.Namespace, target: dict[str, Any], scale: float) -> BenchConfig:
    return BenchConfig.model_validate({
        "name": "pd-crosscheck", "seed": args.seed,
        "workload": {"type": "random", "input_len": 4000, "output_len": 200, "range_ratio": 0.2,
                     "num_prompts": args.requests},
        "load": {"type": "poisson", "stages": [{"rate": args.rate / scale, "num_requests": args.requests}]},
        **target})


def figures(res: Any, scale: float) -> dict[str, Any]:
    s = res.stages[0].summary
    lat = s.latency.to_json()
    ttft, itl = lat["ttft"] or {}, lat["itl"] or {}
    return {"ttft_p50_s": ttft["p50"] / scale, "ttft_p90_s": ttft["p90"] / scale,
            "itl_p50_s": itl["p50"] / scale, "itl_p99_s": itl["p99"] / scale,
            "output_tokens_per_s": s.throughput.output_tokens_per_s * scale,
            "completed": s.num_completed, "failed": s.num_failed}


def run_virtual_side(args: argparse.Namespace, treatment: str) -> dict[str, Any]:
    n = 1 + args.decode
    cluster: dict[str, Any] = {"replicas": n, "profile": PROFILE, "model": MODEL, "scrape_interval_s": 0.075,
                               "policy": "pd" if treatment == "pd" else "llm-d-default"}
    if treatment == "pd":
        cluster["pd"] = {"prefill_replicas": 1, "threshold": 0, "link": "rdma"}
    res = run_virtual(scenario(args, {"cluster": cluster}, 1.0))
    return {**figures(res, 1.0), "pd": res.extra.get("pd")}


def gateway_config(treatment: str, reps: list[Replica], port: int, logdir: Path) -> Path:
    doc = pd_policy_doc(0) if treatment == "pd" else resolve_policy("llm-d-default").model_dump(exclude_none=True)
    sched = logdir / f"epp-{treatment}.yaml"
    sched.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = {"gateway": {"host": "127.0.0.1", "port": port, "log_level": "WARNING", "access_log": "off",
                       "pd": {"placement": "gateway"}},
           "scheduler": str(sched), "kvindex": {"tokenizer": "default"},
           "endpoints": {"static": [{"address": r.address, "models": [MODEL], "kv_events": r.kv_events_endpoint,
                                     **({"labels": {ROLE_LABEL: r.role}} if r.role else {})} for r in reps]}}
    path = logdir / f"gateway-{treatment}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


async def run_real_side(args: argparse.Namespace, treatment: str, logdir: Path) -> dict[str, Any]:
    sim_args = ["--profile", PROFILE, "--timing", "physics", "--time-scale", str(args.time_scale)]
    launcher = SimLauncher(model=MODEL, sim_args=sim_args, kv_events=True)
    try:
        reps = (await launcher.start_pd(1, args.decode) if treatment == "pd"
                else await launcher.start(1 + args.decode))
        port = rq.free_port()
        cmd = [sys.executable, "-m", "lanterna.cli.main", "gateway", "--config",
               str(gateway_config(treatment, reps, port, logdir))]
        proc = rq.peers.spawn(f"gateway-{treatment}", cmd, f"http://127.0.0.1:{port}", logdir)
        try:
            await asyncio.to_thread(rq.wait_gateway, proc, len(reps))
            cfg = scenario(args, {"target": {"url": proc.url, "model": MODEL, "api": "completions"}},
                           args.time_scale)
            runner = HttpRunner(cfg, progress=False, renderer=rc.TokenRenderer())  # type: ignore[arg-type]
            runner.rng = random.Random(args.seed + 1)  # the virtual cluster's arrival generator: same offsets
            res = await runner.run()
            out = figures(res, args.time_scale)
            if treatment == "pd":
                out["kv_transfers"] = await kv_transfers(reps)
            return out
        finally:
            rq.peers.stop(proc)
    finally:
        await launcher.stop()


async def kv_transfers(reps: list[Replica]) -> dict[str, float]:
    """``lanterna_sim_kv_transfers_total`` by outcome, summed over the decode sims (every pull, not sampled)."""
    import aiohttp

    out: dict[str, float] = {}
    async with aiohttp.ClientSession() as s:
        for r in reps:
            if r.role != "decode":
                continue
            async with s.get(f"http://{r.address}/metrics") as resp:
                text = await resp.text()
            for line in text.splitlines():
                if line.startswith("lanterna_sim_kv_transfers_total{"):
                    outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
                    out[outcome] = out.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def ratios(virtual: dict[str, Any], real: dict[str, Any]) -> dict[str, float]:
    return {k: real[k] / virtual[k] for k in KEYS if virtual[k]}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    treatments = args.treatments.split(",")
    out: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k != "out"}, "profile": PROFILE,
                           "topology": f"1P{args.decode}D vs aggregated x{1 + args.decode}", "runs": []}
    virtual = {}
    for t in treatments:
        t0 = time.perf_counter()
        virtual[t] = run_virtual_side(args, t)
        rq.say(f"[virtual {t}] {time.perf_counter() - t0:.1f}s wall")
    out["virtual"] = virtual
    with tempfile.TemporaryDirectory(prefix="lanterna-pdx-") as tmp:
        for rep in range(args.repeats):
            real = {}
            for t in treatments:
                t0 = time.perf_counter()
                rq.say(f"[real {t} #{rep + 1}] {args.requests} requests at {args.rate / args.time_scale:g} req/s ...")
                real[t] = await run_real_side(args, t, Path(tmp))
                rq.say(f"[real {t} #{rep + 1}] {time.perf_counter() - t0:.1f}s wall")
            out["runs"].append({"real": real, "ratio_real_to_virtual": {t: ratios(virtual[t], real[t])
                                                                       for t in treatments}})
    return out


def print_report(res: dict[str, Any]) -> None:
    print(f"\n{'treatment':11} {'side':8} {'TTFT p50':>9} {'TTFT p90':>9} {'ITL p50':>8} {'ITL p99':>8} {'tok/s':>7}")
    for t, v in res["virtual"].items():
        rows = [("virtual", v)] + [(f"real #{i + 1}", r["real"][t]) for i, r in enumerate(res["runs"])]
        for side, f in rows:
            print(f"{t:11} {side:8} {f['ttft_p50_s']:9.3f} {f['ttft_p90_s']:9.3f} {f['itl_p50_s'] * 1e3:8.1f} "
                  f"{f['itl_p99_s'] * 1e3:8.1f} {f['output_tokens_per_s']:7.1f}")
        for i, r in enumerate(res["runs"]):
            print(f"{t:11} ratio #{i + 1} " + " ".join(f"{k}={x:.2f}" for k, x in r["ratio_real_to_virtual"][t].items()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument
    a("--decode", type=int, default=1, help="decode replicas next to the one prefill replica")
    a("--rate", type=float, default=2.0, help="virtual-time Poisson rate (req/s)")
    a("--requests", type=int, default=60)
    a("--time-scale", type=float, default=4.0, help="real seconds per simulated second on the real side")
    a("--treatments", default="pd,aggregated")
    a("--repeats", type=int, default=1)
    a("--seed", type=int, default=0)
    a("--out", type=Path, default=HERE / "crosscheck.json")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    res = asyncio.run(main_async(args))
    print_report(res)
    args.out.write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
