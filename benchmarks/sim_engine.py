"""Simulator engine speed: simulated requests per CPU-second and Python cost per engine step.

Run: ``.venv/bin/python benchmarks/sim_engine.py [--requests 400] [--prompt 8192] [--output 200]``.
Target (issue "P0 · Foundation and the vLLM-compatible simulator"): a step with 256 running
sequences well under 1 ms of Python. Prints figures and ratios; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import time

from lanterna.sim import Engine, EngineConfig, EngineRequest, PhysicsTimer, get_profile


def _engine(prefix_caching: bool = True, profile: str = "llama-3.1-8b-h100", compact: bool = False) -> Engine:
    p = get_profile(profile)
    cfg = EngineConfig(
        num_gpu_blocks=p.num_gpu_blocks(16),
        kv_bytes_per_token=p.kv_bytes_per_token,
        enable_prefix_caching=prefix_caching,
        max_model_len=16384,
        compact_outputs=compact,
    )
    return Engine(cfg, PhysicsTimer(p), seed=1)


def saturation(n: int, prompt: int, output: int, prefix_caching: bool, shared: int) -> dict[str, float]:
    """All requests queued at t=0 (saturation); ``shared`` leading tokens common to every prompt."""
    e = _engine(prefix_caching)
    for i in range(n):
        toks = list(range(shared)) + list(range(10**6 + i * prompt, 10**6 + i * prompt + prompt - shared))
        e.add_request(EngineRequest(f"r{i}", toks, output, 0.0))
    now, steps = 0.0, 0
    t0 = time.process_time()
    while e.has_work():
        now += e.step(now).duration_s
        steps += 1
    cpu = time.process_time() - t0
    return {
        "cpu_s": cpu,
        "sim_s": now,
        "steps": steps,
        "req_per_cpu_s": n / cpu,
        "us_per_step": cpu / steps * 1e6,
        "speedup_vs_real_time": now / cpu,
    }


def decode_step_cost(batch: int, steps: int, compact: bool = False) -> float:
    """Python microseconds per step with ``batch`` sequences all decoding (1 token each)."""
    e = _engine(compact=compact)
    for i in range(batch):
        e.add_request(EngineRequest(f"d{i}", list(range(i * 1000, i * 1000 + 500)), 10**6, 0.0))
    while e.stats().num_waiting or any(s.num_computed < len(s.tokens) - 1 for s in e.running):
        e.step(0.0)
    t0 = time.perf_counter()
    for _ in range(steps):
        e.step(0.0)
    return (time.perf_counter() - t0) / steps * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--prompt", type=int, default=8192)
    ap.add_argument("--output", type=int, default=200)
    a = ap.parse_args()
    print("step cost, all decoding (Python, per step, best of 3):")
    for b in (1, 64, 256):
        best = min(decode_step_cost(b, 300) for _ in range(3))
        fast = min(decode_step_cost(b, 300, compact=True) for _ in range(3))
        print(f"  batch {b:4d}: {best:8.1f} us  ({best / b:.2f} us per sequence); compact_outputs "
              f"{fast:8.1f} us ({fast / b:.2f} us per sequence, {best / fast:.2f}x)")
    print(
        f"saturation, {a.requests} requests x {a.prompt} prompt / {a.output} output tokens, llama-3.1-8b-h100:"
    )
    rows = {
        "unique prompts, caching on": saturation(a.requests, a.prompt, a.output, True, 0),
        "unique prompts, caching off": saturation(a.requests, a.prompt, a.output, False, 0),
        "6k shared prefix, caching on": saturation(a.requests, a.prompt, a.output, True, 6144),
    }
    for name, r in rows.items():
        print(
            f"  {name:30s} {r['req_per_cpu_s']:8.1f} req/CPU-s  {r['us_per_step']:7.1f} us/step  "
            f"{r['steps']:6.0f} steps  sim {r['sim_s']:7.1f} s  ({r['speedup_vs_real_time']:.0f}x real time)"
        )
    base = rows["unique prompts, caching off"]["req_per_cpu_s"]
    print(
        f"  ratio caching on/off (CPU cost): {rows['unique prompts, caching on']['req_per_cpu_s'] / base:.2f}x"
    )


if __name__ == "__main__":
    main()
