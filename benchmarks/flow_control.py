"""FlowController fast-path cost in process: admits/s idle, and under contention (queueing + handoff).

    .venv/bin/python benchmarks/flow_control.py [--n 200000]

Prints figures and ratios against a bare ``asyncio.Semaphore`` (the floor for "bounded concurrency"), and the
pure ``FlowCore`` admit+release pair without asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from lanterna.clock import MonotonicClock
from lanterna.flowcontrol import FlowConfig, FlowCore, FlowRequest
from lanterna.routing.flow import FlowController


def bench_core(n: int) -> float:
    core = FlowCore(FlowConfig(max_concurrency=1024), MonotonicClock())
    reqs = [FlowRequest(str(i)) for i in range(1024)]
    t0 = time.perf_counter()
    for i in range(n):
        entry, _ = core.admit(reqs[i & 1023])
        core.release(entry)
    return (time.perf_counter() - t0) / n


async def bench_idle(n: int) -> tuple[float, float]:
    flow = FlowController(FlowConfig(max_concurrency=1024))
    sem = asyncio.Semaphore(1024)
    reqs = [FlowRequest(str(i)) for i in range(1024)]
    t0 = time.perf_counter()
    for i in range(n):
        async with flow.admit(reqs[i & 1023]):
            pass
    t_flow = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        async with sem:
            pass
    return t_flow, (time.perf_counter() - t0) / n


async def bench_contended(n: int, tasks: int, slots: int, tenants: int) -> tuple[float, float]:
    """``tasks`` workers loop admit -> yield -> release through ``slots`` slots: most admits queue."""
    flow = FlowController(FlowConfig(max_concurrency=slots, max_queue_len=tasks))
    sem = asyncio.Semaphore(slots)
    per = n // tasks

    async def worker_flow(w: int) -> None:
        r = FlowRequest(str(w), fairness_id=f"t{w % tenants}", priority=w % 3)
        for _ in range(per):
            async with flow.admit(r):
                await asyncio.sleep(0)

    async def worker_sem() -> None:
        for _ in range(per):
            async with sem:
                await asyncio.sleep(0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker_flow(w) for w in range(tasks)))
    t_flow = (time.perf_counter() - t0) / (per * tasks)
    assert flow.in_flight == 0 and flow.num_queued == 0
    t0 = time.perf_counter()
    await asyncio.gather(*(worker_sem() for _ in range(tasks)))
    return t_flow, (time.perf_counter() - t0) / (per * tasks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    core = bench_core(args.n)
    idle, idle_sem = asyncio.run(bench_idle(args.n))
    cont, cont_sem = asyncio.run(bench_contended(args.n // 2, tasks=256, slots=8, tenants=16))
    out = {
        "core_admit_release_us": core * 1e6,
        "idle_admit_us": idle * 1e6,
        "idle_semaphore_us": idle_sem * 1e6,
        "idle_admits_per_s": 1 / idle,
        "contended_admit_us": cont * 1e6,
        "contended_semaphore_us": cont_sem * 1e6,
        "contended_admits_per_s": 1 / cont,
    }
    print(f"pure FlowCore admit+release      {core * 1e6:8.2f} us")
    print(f"idle fast path (async with)      {idle * 1e6:8.2f} us  {1 / idle:>12,.0f} admits/s  "
          f"x{idle / idle_sem:.2f} of asyncio.Semaphore ({idle_sem * 1e6:.2f} us)")
    print(f"contended (256 tasks, 8 slots)   {cont * 1e6:8.2f} us  {1 / cont:>12,.0f} admits/s  "
          f"x{cont / cont_sem:.2f} of asyncio.Semaphore ({cont_sem * 1e6:.2f} us)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
