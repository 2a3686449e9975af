"""Model-based scaling: the highest request rate one replica sustains within the TTFT/ITL targets, then
``replicas = ceil(demand rate / that rate)``.

The per-replica rate comes from the simulator's step-time model (``sim.timing``: the same physics the virtual
cluster runs) or from measured curves (rate -> TTFT, ITL points from a benchmark sweep).

Steady state of one replica at arrival rate r (prompt I tokens, I_new = I x (1 - cached) to compute, output O):
the step time t is the fixed point of

    t = step_time(decode: B = r x O x t sequences at context I + O/2, prefill: r x I_new x t tokens)

(Little's law: a request decodes for O steps). Iterating from t = step_time(one decode) rises monotonically to the
least fixed point, or diverges when no fixed point exists: the replica cannot keep up. Then

    ITL  = t
    S    = sum over the ceil(I_new / (budget - B)) chunks of step_time(decodes + that chunk)   (prefill service)
    rho  = r x (S - chunks x t_decode_only)                                              (prefill occupancy)
    TTFT = S + rho / (2 (1 - rho)) x S                                                   (M/D/1 wait, rho < 1)

feasible while B <= max_num_seqs, B x (I + O/2) <= kv tokens, rho < 1, ITL <= target and TTFT <= target. All of
these only worsen with r, so the highest feasible r is found by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lanterna.autoscale.capacity import allocate
from lanterna.autoscale.types import PoolSnapshot, Recommendation
from lanterna.sim.timing import BatchShape, StepTimer

_MAX_ITER = 200


@dataclass(frozen=True, slots=True)
class WorkloadShape:
    prompt_tokens: float
    output_tokens: float
    cached_fraction: float = 0.0  # of the prompt served from the prefix cache


@dataclass(frozen=True, slots=True)
class ServingLimits:
    """The engine's limits (vLLM's ``max_num_seqs``, ``max_num_batched_tokens``, KV blocks x block size)."""

    kv_cache_tokens: int
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    kv_headroom: float = 0.9  # plan to fill at most this share of the KV cache (vLLM preempts beyond it)


@dataclass(frozen=True, slots=True)
class LatencyTargets:
    ttft_s: float
    itl_s: float


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    rate_rps: float
    itl_s: float  # math.inf when no steady state exists
    ttft_s: float
    num_running: float
    feasible: bool
    reason: str


def operating_point(timer: StepTimer, shape: WorkloadShape, limits: ServingLimits, rate: float,
                    targets: LatencyTargets | None = None) -> OperatingPoint:
    """The steady state of one replica at ``rate`` requests/s (formulas in the module docstring)."""
    n_in, n_out = shape.prompt_tokens, max(1.0, shape.output_tokens)
    n_new = max(1.0, n_in * (1.0 - shape.cached_fraction))
    ctx = int(n_in + n_out / 2)

    def step(num_decodes: float, prefill_tokens: float) -> float:
        b = BatchShape(prefill_chunks=[(int(prefill_tokens), int(n_in - n_new))] if prefill_tokens >= 1 else [],
                       decode_contexts=[ctx] * max(1, round(num_decodes)), num_prefill_sampled=0)
        return timer.step_time(b)

    t = step(1, 0)
    for _ in range(_MAX_ITER):
        nxt = step(rate * n_out * t, rate * n_new * t)
        if nxt > 60.0 or rate * n_out * nxt > 10 * limits.max_num_seqs:
            return OperatingPoint(rate, math.inf, math.inf, math.inf, False, "no steady state: cannot keep up")
        if abs(nxt - t) <= 1e-7 * t:
            t = nxt
            break
        t = nxt
    running = rate * n_out * t
    if running > limits.max_num_seqs:
        return OperatingPoint(rate, t, math.inf, running, False, f"{running:.0f} running > max_num_seqs")
    if running * (n_in + n_out / 2) > limits.kv_cache_tokens * limits.kv_headroom:
        return OperatingPoint(rate, t, math.inf, running, False, "KV cache full")
    budget = max(1.0, limits.max_num_batched_tokens - running)
    chunks = math.ceil(n_new / budget)
    last = n_new - (chunks - 1) * budget
    t_dec = step(running, 0) if running >= 0.5 else 0.0
    service = (chunks - 1) * step(running, budget) + step(running, last)
    rho = rate * max(0.0, service - chunks * t_dec)
    if rho >= 1.0:
        return OperatingPoint(rate, t, math.inf, running, False, "prefill cannot keep up")
    ttft = service * (1.0 + rho / (2.0 * (1.0 - rho)))
    if targets is not None and t > targets.itl_s:
        return OperatingPoint(rate, t, ttft, running, False, f"ITL {t * 1e3:.1f} ms > target")
    if targets is not None and ttft > targets.ttft_s:
        return OperatingPoint(rate, t, ttft, running, False, f"TTFT {ttft:.2f} s > target")
    return OperatingPoint(rate, t, ttft, running, True, "ok")


def max_sustainable_rate(timer: StepTimer, shape: WorkloadShape, limits: ServingLimits, targets: LatencyTargets,
                         *, tolerance: float = 1e-3) -> OperatingPoint:
    """The highest rate (requests/s) one replica serves within ``targets``; rate 0 when even one request misses."""
    lo = OperatingPoint(0.0, 0.0, 0.0, 0.0, True, "idle")
    first = operating_point(timer, shape, limits, 1e-6, targets)
    if not first.feasible:
        return OperatingPoint(0.0, first.itl_s, first.ttft_s, 0.0, False, f"a lone request misses: {first.reason}")
    hi = 1.0
    while (p := operating_point(timer, shape, limits, hi, targets)).feasible:
        lo, hi = p, hi * 2
        if hi > 1e6:
            return lo
    while hi - lo.rate_rps > tolerance * max(hi, 1e-3):
        mid = (lo.rate_rps + hi) / 2
        p = operating_point(timer, shape, limits, mid, targets)
        if p.feasible:
            lo = p
        else:
            hi = mid
    return lo


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """One measured load point of a single replica (e.g. a ``lanterna bench`` sweep stage)."""

    rate_rps: float
    ttft_s: float
    itl_s: float


def max_rate_from_curve(points: Sequence[CurvePoint], targets: LatencyTargets) -> float:
    """The highest rate within ``targets`` on a measured curve, linearly interpolated to the first miss."""
    pts = sorted(points, key=lambda p: p.rate_rps)
    best = 0.0
    prev: CurvePoint | None = None
    for p in pts:
        if p.ttft_s <= targets.ttft_s and p.itl_s <= targets.itl_s:
            best, prev = p.rate_rps, p
            continue
        if prev is not None:  # the crossing lies between prev (ok) and p (miss): interpolate each metric's limit
            fracs = []
            for a, b, lim in ((prev.ttft_s, p.ttft_s, targets.ttft_s), (prev.itl_s, p.itl_s, targets.itl_s)):
                fracs.append(1.0 if b <= lim else (lim - a) / (b - a))
            best = prev.rate_rps + min(fracs) * (p.rate_rps - prev.rate_rps)
        break
    return best


@dataclass(frozen=True, slots=True)
class ModelBasedPolicy:
    """Policy ``model-based``: need = (arrival rate + waiting / drain_s) / headroom in requests/s, against each
    variant's ``max_rate_rps``, allocated cost-aware (``capacity.allocate``). The backlog term counts only while
    no replica is starting (the backlog grows during a cold start; re-asking for it each tick is a cascade)."""

    headroom: float = 0.9
    drain_s: float = 30.0
    name: str = "model-based"

    def recommend(self, snap: PoolSnapshot) -> Recommendation:
        d = snap.demand
        backlog = 0.0 if snap.num_starting else snap.num_waiting / self.drain_s  # see capacity.py: no cascade
        need = (d.arrival_rate_rps + backlog) / self.headroom
        targets, why = allocate(snap.variants, need, lambda v: v.max_rate_rps)
        return Recommendation(targets, (f"rate: {why} (arrivals {d.arrival_rate_rps:.2f}/s, "
                                        f"{snap.num_waiting} waiting)",))
