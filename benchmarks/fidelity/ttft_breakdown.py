"""Where real TTFT goes under load: the client's TTFT against vLLM's own histograms, per offered rate.

    PYTHONPATH=src:. LANTERNA_VLLM_PYTHON=.venv-vllm/bin/python .venv/bin/python \\
        benchmarks/fidelity/ttft_breakdown.py [--policy round-robin] [--rates 2,16,32,64] [--requests 150]

Two pinned tiny vLLMs behind the gateway (as ``run_fidelity.py``), one Poisson stage per rate (the fidelity
workload), ``/metrics`` scraped before and after each: per rate the mean client TTFT, vLLM's frontend TTFT
(``vllm:time_to_first_token_seconds``: arrival at the API server to the first token's output), the engine's queue
and prefill times. Client minus frontend = gateway, client and HTTP legs; frontend minus prefill = the API
server's input path, the wait for the running step and the output path. This is how the simulator's busy
transit was found (docs/planner.md, "Busy transit")."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]
import aiohttp  # noqa: E402
import routing_quality as rq  # noqa: E402
import run_fidelity as rf  # noqa: E402

from lanterna.bench.runner import HttpRunner  # noqa: E402

HISTOGRAMS = {"frontend_ttft": "vllm:time_to_first_token_seconds", "queue": "vllm:request_queue_time_seconds",
              "prefill": "vllm:request_prefill_time_seconds"}


async def scrape(s: aiohttp.ClientSession, reps: rq.Replicas) -> dict[str, float]:
    """Sum and count of each histogram over all replicas."""
    names = [name + suf for name in HISTOGRAMS.values() for suf in ("_sum", "_count")]
    out = dict.fromkeys(names, 0.0)
    for u in reps.urls:
        async with s.get(u + "/metrics") as r:
            for n, v in zip(names, rf.metric_sums(await r.text(), names), strict=True):
                out[n] += v
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    fargs = rf.parse_args(["--policy", args.policy, "--requests", str(args.requests)])
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, rq.vllm_replicas(2, fargs.kv_bytes, Path(tmp), pin=True) as reps:
        proc = await asyncio.to_thread(rq.start_router, f"lanterna:{args.policy}", reps, Path(tmp))
        try:
            async with aiohttp.ClientSession() as s:
                await rq.reset_caches(s, reps)
                target = {"target": {"url": proc.url, "model": reps.model, "api": "completions"}}
                # the fidelity ladder's warm-up (every group's prefix cached), outside the histograms' windows
                warm = rf.parse_args(["--rates", "8", "--requests", str(fargs.warmup), "--warmup", "0"])
                await HttpRunner(rf.scenario(warm, target), progress=False, renderer=rf.TokenRenderer()).run()  # type: ignore[arg-type]
                fargs.warmup = 0
                for rate in args.rates:
                    fargs.rates = [rate]
                    cfg = rf.scenario(fargs, target)
                    await rf.wait_idle(fargs, f"rate {rate:g}")
                    a = await scrape(s, reps)
                    res = await HttpRunner(cfg, progress=False, renderer=rf.TokenRenderer()).run()  # type: ignore[arg-type]
                    b = await scrape(s, reps)
                    recs = [r for r in res.stages[-1].records if r.ok and r.ttft_s is not None]
                    row: dict[str, float | None] = {"client_ttft_ms": 1e3 * statistics.fmean(r.ttft_s or 0.0 for r in recs)}
                    for key, name in HISTOGRAMS.items():
                        n = b[name + "_count"] - a[name + "_count"]
                        row[f"{key}_ms"] = 1e3 * (b[name + "_sum"] - a[name + "_sum"]) / n if n else None
                    rows[f"{rate:g}"] = row
                    rq.say(f"{rate:g} req/s: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if v is not None))
        finally:
            rq.peers.stop(proc)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default="round-robin")
    p.add_argument("--rates", type=lambda v: [float(x) for x in v.split(",")], default=[2.0, 16.0, 32.0, 64.0])
    p.add_argument("--requests", type=int, default=150)
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = asyncio.run(main_async(args))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
