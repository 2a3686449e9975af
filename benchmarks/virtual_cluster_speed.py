"""Virtual-time cluster speed: simulated seconds per CPU-second on the well-lit scenarios.

Run: ``.venv/bin/python benchmarks/virtual_cluster_speed.py [--scenario inference-scheduling]
[--policy precise] [--profile out.prof]``. Issue target (P0 · Benchmark harness): >= 20x real time on
the inference-scheduling seed case (aim for >= 30x for margin on a busy machine). Prints figures, asserts
nothing; run the same command before and after a change (and twice: the VM is shared).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

from lanterna.bench.config import load_config
from lanterna.cluster.virtual import run_virtual

WELL_LIT = Path(__file__).resolve().parent / "well-lit"


def measure(scenario: str, policy: str, profile: str | None) -> dict[str, float]:
    cfg = load_config(WELL_LIT / scenario / "scenario.yaml", {"cluster.policy": policy})
    prof = cProfile.Profile() if profile else None
    cpu0 = time.process_time()
    if prof:
        prof.enable()
    res = run_virtual(cfg)
    if prof:
        prof.disable()
        prof.dump_stats(profile)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    cpu = time.process_time() - cpu0
    sim = res.extra["virtual_time_s"]
    n = sum(len(s.records) for s in res.stages)
    tps = [round(s.summary.throughput.output_tokens_per_s) for s in res.stages]
    return {"virtual_s": sim, "cpu_s": cpu, "x_real_time_cpu": sim / cpu, "requests": n,
            "events": res.extra["num_events"], "out_tok_s_per_stage": tps}  # type: ignore[dict-item]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenario", action="append", help="well-lit scenario (default: seed case + cold prefix)")
    ap.add_argument("--policy", default="precise")
    ap.add_argument("--profile", help="write a cProfile dump here and print the top functions")
    a = ap.parse_args()
    for sc in a.scenario or ["inference-scheduling", "cold-prefix-stability"]:
        r = measure(sc, a.policy, a.profile)
        print(f"{sc:28s} policy={a.policy:10s} virtual {r['virtual_s']:7.1f} s  cpu {r['cpu_s']:6.2f} s  "
              f"-> {r['x_real_time_cpu']:5.1f}x real time per CPU-second  ({r['requests']} requests, "
              f"{r['events']} events; out tok/s per stage {r['out_tok_s_per_stage']})")


if __name__ == "__main__":
    main()
