"""``lanterna plan cpu-calibrate``: time a live vLLM (the tiny model on CPU) and fit a step-time profile.

    lanterna plan cpu-calibrate --url http://127.0.0.1:8100 --model tiny --out cpu-profile.json

Lone prompts of several lengths (``max_tokens=1``) give prefill latencies; 1..N concurrent streams give decode
step times (each stream's mean time per token, median over streams). Prompts are random token ids, new each time, so the prefix cache never
hits. The fit (``planner.calibrate``) is written as JSON; ``load_fit`` reads it back for the simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import aiohttp

from lanterna.planner.calibrate import StepFit, StepSample, fit_steps

PREFILL_LENGTHS = (32, 128, 256, 512, 1024)
DECODE_SEQS = (1, 2, 4, 8, 16)


def _ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(300, 8000) for _ in range(n)]


async def _prefill(s: aiohttp.ClientSession, url: str, model: str, n: int, rng: random.Random) -> float:
    body = {"model": model, "prompt": _ids(rng, n), "max_tokens": 1, "ignore_eos": True}
    t0 = time.perf_counter()
    async with s.post(url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        await r.read()
    return time.perf_counter() - t0


async def _stream_step(s: aiohttp.ClientSession, url: str, model: str, rng: random.Random, out_len: int,
                       steps: list[float]) -> None:
    """Mean time per token of one stream after its first few: a loaded API server flushes several tokens in
    one write, so single gaps are bimodal (0 or several steps) while their mean stays one step."""
    body = {"model": model, "prompt": _ids(rng, 16), "max_tokens": out_len, "ignore_eos": True, "stream": True}
    times: list[float] = []
    async with s.post(url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.content:
            if line.startswith(b"data: {"):
                times.append(time.perf_counter())
    skip = min(4, len(times) // 4)  # the ramp while the other streams are still starting
    if len(times) - skip >= 2:
        steps.append((times[-1] - times[skip]) / (len(times) - 1 - skip))


async def measure(url: str, model: str, repeats: int = 3, out_len: int = 48, seed: int = 0,
                  prefill_lengths: tuple[int, ...] = PREFILL_LENGTHS,
                  decode_seqs: tuple[int, ...] = DECODE_SEQS) -> list[StepSample]:
    rng = random.Random(seed)
    samples: list[StepSample] = []
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        await _prefill(s, url, model, 16, rng)  # warm the server
        for n in prefill_lengths:
            times = [await _prefill(s, url, model, n, rng) for _ in range(repeats)]
            samples.append(StepSample(statistics.median(times), prefill_tokens=n))
        for n in decode_seqs:
            med = []
            for _ in range(repeats):
                steps: list[float] = []
                await asyncio.gather(*(_stream_step(s, url, model, rng, out_len, steps) for _ in range(n)))
                med.append(statistics.median(steps) if steps else 0.0)  # each stream gets one token per step
            samples.append(StepSample(statistics.median(med), decode_seqs=n))
    return samples


def save_fit(fit: StepFit, samples: list[StepSample], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fit": asdict(fit), "samples": [asdict(s) for s in samples]}, indent=2))


def load_fit(path: Path) -> StepFit:
    return StepFit(**json.loads(path.read_text())["fit"])


def run_calibrate(args: argparse.Namespace) -> int:
    samples = asyncio.run(measure(args.url.rstrip("/"), args.served_model, args.repeats))
    fit = fit_steps(samples)
    save_fit(fit, samples, args.out)
    for smp in samples:
        what = f"prefill {smp.prefill_tokens:>5} tokens" if smp.prefill_tokens else f"decode {smp.decode_seqs:>3} seqs"
        print(f"  {what}: measured {smp.seconds * 1e3:7.2f} ms, fit {fit.predict(smp) * 1e3:7.2f} ms")
    print(f"step {fit.step_s * 1e3:.2f} ms + {fit.prefill_chunk_s * 1e3:.2f} ms/prefill chunk + "
          f"{fit.prefill_token_s * 1e6:.1f} us/prefill token + {fit.decode_seq_s * 1e3:.3f} ms/decode seq "
          f"(rms error {fit.rms_rel_error:.1%}); written to {args.out}")
    return 0
