"""Bootstrap the predictor from the simulator's timing model, so the first requests are not routed blind.

The simulator's ``StepTimer`` answers "how long does one engine step of this batch take". From it we derive
what a request would see in the states the features describe, with vLLM's chunked-prefill schedule:

- TTFT(uncached u, queued q, seqs d): the ``q + u`` prefill tokens go through steps of
  ``budget - d`` prefill tokens each, with the ``d`` running sequences decoding alongside;
- past the seat limit ``S`` (``max_num_seqs``), each extra sequence waits for a seat: a running sequence
  finishes every ``step(S decodes) x mean_output / S`` seconds on average;
- TPOT(seqs d, KV tokens k, queued q): one decode step of ``d + 1`` sequences over ``k`` context tokens, plus
  the share of steps that also carry a prefill chunk while ``q`` tokens are queued.

A least-squares fit of the predictor's linear law over a grid of such states gives the prior weights. The
law is linear and the physics is not, so the prior is rough (that is what ``LatencyPrior.ridge`` encodes);
live samples take over within a few hundred completions.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from lanterna.scheduler.predict.features import tpot_features, ttft_features
from lanterna.scheduler.predict.predictor import LatencyPrior
from lanterna.scheduler.predict.rls import OnlineRidge

StepFn = Callable[[list[tuple[int, int]], list[int]], float]
"""Seconds of one step given (prefill chunks as (new tokens, context before), decode contexts)."""

_UNCACHED = (16, 256, 1024, 2048, 4096, 8192, 16384)
_QUEUED = (0, 2048, 8192, 24576, 65536)
_SEQS = (0, 4, 16, 48, 128)
_OVER = (8, 32, 96)  # sequences past the seat limit in the grid
_CONTEXT = 2048  # tokens of context per running sequence in the grid


def simulated_ttft(step: StepFn, uncached: int, queued: int, seqs: int, budget: int, max_seqs: int = 256,
                   mean_output: int = 512) -> float:
    over = seqs + 1 - max_seqs
    if over > 0:  # wait for seats, then prefill beside a full batch
        seat = step([], [_CONTEXT] * max_seqs) * mean_output / max_seqs
        return over * seat + simulated_ttft(step, uncached, queued, max_seqs - 1, budget, max_seqs, mean_output)
    work = uncached + queued
    chunk = max(16, budget - seqs)
    decodes = [_CONTEXT] * seqs
    full, rest = divmod(work, chunk)
    t = full * step([(chunk, _CONTEXT)], decodes) if full else 0.0
    if rest:
        t += step([(rest, _CONTEXT)], decodes)
    return t


def simulated_tpot(step: StepFn, seqs: int, kv_tokens: int, queued: int, budget: int) -> float:
    n = seqs + 1
    decodes = [max(1, kv_tokens // n)] * n
    base = step([], decodes)
    if queued <= 0:
        return base
    chunk = max(16, budget - n)
    with_chunk = step([(chunk, _CONTEXT)], decodes)
    share = min(1.0, queued / (4.0 * budget))  # a queue of several budgets keeps chunks in most steps
    return base + share * (with_chunk - base)


def prior_from_step(step: StepFn, *, budget: int = 8192, max_seqs: int = 256, mean_output: int = 512,
                    ridge: float = 1.0) -> LatencyPrior:
    """Fit the predictor's laws to the timing model over a grid of states (relative-error weighted)."""
    tt = OnlineRidge(len(ttft_features(0, 0, 0, 0, 0, 0, 0)), ridge=1e-6, forget=1.0)
    tp = OnlineRidge(len(tpot_features(0, 0, 0, 0, 0)), ridge=1e-6, forget=1.0)
    for over in _OVER:
        d = max_seqs - 1 + over
        for u in _UNCACHED:
            y = simulated_ttft(step, u, 0, d, budget, max_seqs, mean_output)
            tt.update(ttft_features(u, 0, d, 0, 0, 0, 0, max_seqs), y, 1.0 / (y * y))
    for d in _SEQS:
        for q in _QUEUED:
            for u in _UNCACHED:
                y = simulated_ttft(step, u, q, d, budget, max_seqs, mean_output)
                tt.update(ttft_features(u, q, d, 0, 0, 0, 0, max_seqs), y, 1.0 / (y * y))
            k = (d + 1) * _CONTEXT
            y = simulated_tpot(step, d, k, q, budget)
            tp.update(tpot_features(d, k, q, 0, 0), y, 1.0 / (y * y))
    return LatencyPrior(ttft=tt.coef, tpot=tp.coef, ridge=ridge)


@cache
def prior_from_profile(profile: str, *, budget: int = 8192, max_seqs: int = 256, mean_output: int = 512,
                       ridge: float = 1.0) -> LatencyPrior:
    """The prior for a named simulator profile (``lanterna.sim.profiles``), with its physics step timer."""
    from lanterna.sim.timing import BatchShape, make_timer  # the timing model is pure; imported only here

    timer = make_timer("physics", profile)

    def step(chunks: list[tuple[int, int]], decodes: list[int]) -> float:
        return timer.step_time(BatchShape(prefill_chunks=chunks, decode_contexts=decodes,
                                          num_prefill_sampled=len(chunks)))

    return prior_from_step(step, budget=budget, max_seqs=max_seqs, mean_output=mean_output, ridge=ridge)
