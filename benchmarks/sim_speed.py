"""How fast is the simulator? (1) the pure engine in virtual time; (2) one real ``lanterna sim`` process.

(1) Saturating workload through ``Engine`` + physics timer (llama-3.1-8b-h100), no sleeping: simulated
    requests and tokens per CPU-second (``time.process_time``) and simulated seconds per CPU-second.
(2) ``lanterna sim --timing physics --profile llama-3.1-8b-h100`` on loopback, driven by an aiohttp load
    generator: 200 concurrent streams, then an open loop at 100 req/s. Reports achieved rate, the sim's own
    step lag (``lanterna_sim_step_lag_seconds``, sampled every 100 ms), the sim process's CPU (from /proc)
    and whether it kept up (no errors and step lag p99 < 50 ms). Achieved < offered with a small lag means the
    *modelled* GPU is saturated (queueing in simulated time), not that the simulator fell behind.

Run: ``.venv/bin/python benchmarks/sim_speed.py [--seconds 10]`` (about 35 s in total).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
PROMPT_WORDS = 60
MAX_TOKENS = 64


def engine_virtual(num_requests: int = 2000) -> dict[str, float]:
    from lanterna.sim.engine import Engine, EngineConfig
    from lanterna.sim.profiles import get_profile
    from lanterna.sim.timing import make_timer
    from lanterna.sim.types import EngineRequest

    blocks = get_profile("llama-3.1-8b-h100").num_gpu_blocks(16)
    eng = Engine(EngineConfig(num_gpu_blocks=blocks, vocab_size=128256), make_timer("physics", "llama-3.1-8b-h100"))
    rng = random.Random(0)
    shared = [rng.randrange(128256) for _ in range(256)]
    for i in range(num_requests):
        tail = [rng.randrange(128256) for _ in range(256)]
        eng.add_request(EngineRequest(f"r{i}", shared + tail, 128, 0.0))
    t, steps, done = 0.0, 0, 0
    cpu0 = time.process_time()
    while eng.has_work():
        out = eng.step(t)
        t += out.duration_s
        steps += 1
        done += sum(1 for o in out.outputs if o.finish_reason)
    cpu = time.process_time() - cpu0
    return {"requests": done, "steps": steps, "cpu_s": cpu, "sim_s": t, "req_per_cpu_s": done / cpu,
            "tokens_per_cpu_s": done * 128 / cpu, "sim_s_per_cpu_s": t / cpu}


@dataclass
class Phase:
    name: str
    offered: str
    wall_s: float = 0.0
    done: int = 0
    errors: int = 0
    tokens: int = 0
    lags: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    client_cpu_s: float = 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _one(session: aiohttp.ClientSession, url: str, rng: random.Random, ph: Phase) -> None:
    prompt = " ".join(f"w{rng.randrange(5000)}" for _ in range(PROMPT_WORDS))
    body = {"model": "bench", "prompt": prompt, "max_tokens": MAX_TOKENS, "stream": True}
    try:
        async with session.post(url, json=body) as resp:
            if resp.status != 200:
                ph.errors += 1
                return
            async for line in resp.content:
                if line.startswith(b"data: {"):
                    ph.tokens += 1
        ph.done += 1
    except (TimeoutError, aiohttp.ClientError):
        ph.errors += 1


async def _sample_lag(session: aiohttp.ClientSession, base: str, ph: Phase, stop: asyncio.Event) -> None:
    while not stop.is_set():
        async with session.get(base + "/metrics") as r:
            for line in (await r.text()).splitlines():
                if line.startswith("lanterna_sim_step_lag_seconds{"):
                    ph.lags.append(float(line.rsplit(" ", 1)[1]))
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except TimeoutError:
            pass


async def _phase(base: str, pid: int, ph: Phase, seconds: float, *, concurrency: int = 0, rate: float = 0) -> None:
    url, rng = base + "/v1/completions", random.Random(1)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as session:
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample_lag(session, base, ph, stop))
        cpu0, t0, ccpu0 = _proc_cpu_s(pid), time.monotonic(), time.process_time()
        end = t0 + seconds
        if concurrency:
            async def worker() -> None:
                while time.monotonic() < end:
                    await _one(session, url, rng, ph)
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            tasks, n = [], 0
            while (now := time.monotonic()) < end:
                due = t0 + n / rate
                if due > now:
                    await asyncio.sleep(due - now)
                tasks.append(asyncio.create_task(_one(session, url, rng, ph)))
                n += 1
            await asyncio.gather(*tasks)
        ph.wall_s, ph.cpu_s = time.monotonic() - t0, _proc_cpu_s(pid) - cpu0
        ph.client_cpu_s = time.process_time() - ccpu0
        stop.set()
        await sampler


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


async def real_server(base: str, proc: subprocess.Popen[bytes], seconds: float) -> list[Phase]:
    async with aiohttp.ClientSession() as s:
        deadline = time.monotonic() + 30
        while True:
            try:
                async with s.get(base + "/health") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sim did not start")
            await asyncio.sleep(0.1)
    warm = Phase("warm-up", "1 stream")
    await _phase(base, proc.pid, warm, 1.0, concurrency=1)
    closed = Phase("closed loop", "200 streams")
    await _phase(base, proc.pid, closed, seconds, concurrency=200)
    opened = Phase("open loop", "100 req/s")
    await _phase(base, proc.pid, opened, seconds, rate=100.0)
    return [closed, opened]


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    e = engine_virtual()
    print("== engine in virtual time (2000 requests, 512 in / 128 out, physics llama-3.1-8b-h100) ==")
    print(f"  {e['requests']:.0f} requests, {e['steps']:.0f} steps in {e['cpu_s']:.2f} CPU-s "
          f"(simulated {e['sim_s']:.1f} s)")
    print(f"  {e['req_per_cpu_s']:.0f} simulated requests / CPU-s, {e['tokens_per_cpu_s']:.0f} output tokens / CPU-s, "
          f"{e['sim_s_per_cpu_s']:.1f}x faster than real time")
    port = _free_port()
    cmd = [sys.executable, "-m", "lanterna.cli.main", "sim", "--model", "bench", "--port", str(port),
           "--timing", "physics", "--profile", "llama-3.1-8b-h100"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        phases = _run(real_server(f"http://127.0.0.1:{port}", proc, args.seconds))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    print(f"== one `lanterna sim` process (physics, llama-3.1-8b-h100), {PROMPT_WORDS}-word prompts, "
          f"{MAX_TOKENS} tokens out, {args.seconds:.0f} s per phase ==")
    print(f"  host load average (1 min): {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  {'phase':<12} {'offered':<12} {'req/s':>7} {'tok/s':>8} {'errors':>6} {'lag p50':>8} {'lag p99':>8} "
          f"{'lag max':>8} {'sim CPU':>8} {'us/tok':>6} {'client':>7}  kept up")
    for ph in phases:
        rate = ph.done / ph.wall_s
        p99 = _pct(ph.lags, 0.99)
        kept = ph.errors == 0 and p99 < 0.05  # the sim kept real time (its modelled GPU may still saturate)
        print(f"  {ph.name:<12} {ph.offered:<12} {rate:7.1f} {ph.tokens / ph.wall_s:8.0f} {ph.errors:6d} "
              f"{_pct(ph.lags, 0.5) * 1e3:6.1f}ms {p99 * 1e3:6.1f}ms {max(ph.lags, default=0) * 1e3:6.1f}ms "
              f"{ph.cpu_s / ph.wall_s:7.2f}c {ph.cpu_s / max(1, ph.tokens) * 1e6:6.0f} "
              f"{ph.client_cpu_s / ph.wall_s:6.2f}c  {'yes' if kept else 'NO'}")


if __name__ == "__main__":
    main()
