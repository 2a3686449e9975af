"""Deterministic trace generators in Mooncake's JSONL format (``timestamp`` ms, ``input_length``,
``output_length``, ``hash_ids`` of 512-token blocks; equal leading ids = a shared prefix).

- ``diurnal``: a one-hour "day": a stray request at t = 0 then night (idle) until 600 s, a sine-shaped day peaking
  at 16 req/s around 1800 s with +/-15 % noise per 10 s, two bursts (+16 req/s for 60 s at 1200 s, +20 req/s for
  45 s at 2500 s), a lunch gap (no requests 2000-2150 s) and night again from 3000 s (a last request at 3590 s).
  Prompts: one of 20 system prompts (2 blocks) + a lognormal user part (mean ~1000 tokens); outputs lognormal
  (mean ~250).
- ``mooncake``: no Mooncake trace ships with the repository, so this synthesises one with Mooncake's shape
  (conversation trace: long inputs, short outputs, multi-turn sessions whose turns extend the previous prompt):
  30 minutes, sessions arriving as a Poisson process whose rate switches between 0.25 and 0.6 sessions/s every
  ~5 min (Markov-modulated), 1-6 turns per session 20-60 s apart, first-turn input lognormal (median 4000, cap
  16k tokens), each turn adding ~600 tokens, output lognormal (median 180). A 6-minute idle gap at 900-1260 s.

Every generator takes a seed; the same seed writes the same bytes. ``meta`` gives the burst onsets used for the
"time to react" metric.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

BLOCK = 512


def _lognormal(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, rng.lognormvariate(math.log(median), sigma))))


def diurnal(path: Path, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    day0, day1, peak = 600.0, 3000.0, 16.0
    bursts = [(1200.0, 60.0, 16.0), (2500.0, 45.0, 20.0)]
    gaps = [(2000.0, 2150.0)]

    def rate(t: float, noise: float) -> float:
        if t < day0 or t >= day1 or any(a <= t < b for a, b in gaps):
            return 0.0
        r = 0.5 + (peak - 0.5) * math.sin(math.pi * (t - day0) / (day1 - day0)) * noise
        return r + sum(extra for s, d, extra in bursts if s <= t < s + d)

    rows: list[dict[str, Any]] = []
    next_block = 1000

    def add(t: float) -> None:
        nonlocal next_block
        g = rng.randrange(20)
        user = _lognormal(rng, 800, 0.6, 32, 6000)
        n_user_blocks = math.ceil(user / BLOCK)
        ids = [2 * g, 2 * g + 1] + list(range(next_block, next_block + n_user_blocks))
        next_block += n_user_blocks
        rows.append({"timestamp": int(t * 1000), "input_length": 2 * BLOCK + user,
                     "output_length": _lognormal(rng, 200, 0.6, 8, 2000), "hash_ids": ids})

    add(0.0)
    t, noise, next_noise = day0, 1.0, day0
    while t < day1:
        if t >= next_noise:
            noise, next_noise = rng.uniform(0.85, 1.15), next_noise + 10.0
        r = rate(t, noise)
        if r <= 0:
            t += 1.0
            continue
        t += rng.expovariate(r)
        if rate(t, noise) > 0:
            add(t)
    add(3590.0)
    _write(path, rows)
    return {"name": "diurnal", "requests": len(rows), "duration_s": 3600.0,
            "bursts": [s for s, _, _ in bursts] + [day0], "gaps": [[0.0, day0], *map(list, gaps), [day1, 3600.0]]}


def mooncake(path: Path, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    duration, gap = 1800.0, (900.0, 1260.0)
    rows: list[dict[str, Any]] = []
    next_block, t, hi, switch = 10_000, 0.0, False, 0.0
    onsets = []
    while True:
        if t >= switch:
            hi = not hi
            switch = t + rng.uniform(200.0, 400.0)
            if hi:
                onsets.append(round(t, 1))
        t += rng.expovariate(0.6 if hi else 0.25)
        if t >= duration:
            break
        if gap[0] <= t < gap[1]:
            t = gap[1]
            continue
        first = _lognormal(rng, 4000, 0.7, 256, 16_000)
        ids: list[int] = []
        length = 0
        turn_t = t
        for _ in range(rng.randint(1, 6)):
            length = min(32_000, length + (first if not ids else _lognormal(rng, 600, 0.5, 16, 4000)))
            need = math.ceil(length / BLOCK)
            while len(ids) < need:
                ids.append(next_block)
                next_block += 1
            rows.append({"timestamp": int(turn_t * 1000), "input_length": length,
                         "output_length": _lognormal(rng, 180, 0.8, 4, 2000), "hash_ids": list(ids)})
            length += rows[-1]["output_length"]
            turn_t += rng.uniform(20.0, 60.0)
            if turn_t >= duration or gap[0] <= turn_t < gap[1]:
                break
    rows.sort(key=lambda r: r["timestamp"])
    _write(path, rows)
    return {"name": "mooncake", "requests": len(rows), "duration_s": duration, "bursts": onsets,
            "gaps": [list(gap)]}


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for r in rows:
            fh.write(json.dumps(r, separators=(",", ":")) + "\n")
