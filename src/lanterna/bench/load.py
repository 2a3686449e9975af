"""Load shapes: when each request of a stage is due (offsets in seconds from the stage start).

Schedules are computed up front from a seeded RNG (open loop), so the HTTP runner and the virtual
cluster send the same arrivals, and a runner that falls behind can measure its own lag against them.
Concurrency stages have no schedule: N workers each send the next request when their last one ends.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from lanterna.bench.config import LoadConfig, Stage, Sweep


@dataclass(frozen=True, slots=True)
class StagePlan:
    """One stage to run: ``index`` -1 is the warm-up (excluded from results)."""

    index: int
    stage: Stage
    kind: str  # constant | poisson | concurrency

    @property
    def is_warmup(self) -> bool:
        return self.index < 0

    @property
    def label(self) -> str:
        if self.is_warmup:
            return "warmup"
        st = self.stage
        return f"stage {self.index}: " + (f"{st.rate:g} req/s" if st.rate else f"concurrency {st.concurrency}")


def plan_stages(load: LoadConfig) -> list[StagePlan]:
    """Warm-up first, then the configured stages in order (sweeps are planned by the runner)."""
    plans = [StagePlan(-1, load.warmup, load.type)] if load.warmup is not None else []
    plans += [StagePlan(i, st, load.type) for i, st in enumerate(load.stages)]
    return plans


def arrival_rng(seed: int) -> random.Random:
    """The arrival stream of a scenario's ``seed``: the HTTP runner and the virtual cluster both draw from it, so
    one scenario sends the same arrivals to real servers and to the simulator (fidelity runs compare them)."""
    return random.Random(seed + 1)


def arrival_offsets(stage: Stage, kind: str, rng: random.Random) -> Iterator[float]:
    """Send offsets for a rate stage: constant = i / rate; poisson = exponential gaps.

    Stops at ``duration_s`` or after ``num_requests``, whichever comes first."""
    assert stage.rate is not None
    rate, limit_t = stage.rate, stage.duration_s
    limit_n = stage.num_requests
    t, n = 0.0, 0
    while True:
        if limit_n is not None and n >= limit_n:
            return
        if kind == "constant":
            t = n / rate
        elif n > 0:
            t += rng.expovariate(rate)
        if limit_t is not None and t >= limit_t:
            return
        yield t
        n += 1


def sweep_rates(sweep: Sweep) -> list[float]:
    """Geometric ladder of candidate rates; the runner stops early once saturated."""
    rates, r = [], sweep.start_rate
    while r <= sweep.max_rate * (1 + 1e-9):
        rates.append(r)
        r *= sweep.factor
    return rates


def sweep_stage(sweep: Sweep, rate: float) -> Stage:
    return Stage.model_validate({"rate": rate, "duration_s": sweep.stage_duration_s})


def is_saturated(prev_output_tps: float | None, output_tps: float, ttft_p50_s: float | None, sweep: Sweep) -> bool:
    """Saturation: raising the rate no longer raises output throughput, or TTFT passed its cap."""
    if sweep.max_ttft_p50_s is not None and ttft_p50_s is not None and ttft_p50_s > sweep.max_ttft_p50_s:
        return True
    return prev_output_tps is not None and output_tps < prev_output_tps * (1 + sweep.min_gain)
