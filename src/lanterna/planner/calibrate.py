"""Fit a step-time profile to measured engine timings (pure: samples in, profile out).

Model: one engine step costs ``step_s + prefill_chunk_s x chunks + prefill_token_s x prefill tokens
+ decode_seq_s x decoding sequences``. The samples come from a live server (``cli/plan_calibrate.py``):

- a lone prompt of ``L`` tokens with ``max_tokens=1``: its latency is one prefill step plus the request's path
  through the API server (HTTP, tokenising, detokenising), ``step_s + prefill_chunk_s + prefill_token_s x L``;
- ``N`` concurrent streams: their median inter-token gap is one decode step, ``step_s + decode_seq_s x N``.

Each line is fitted robustly (Theil-Sen), since a shared machine stalls now and then. The per-chunk term
absorbs what a request costs outside the engine loop, so simulated TTFT includes it; it is
charged inside the step, which slightly over-delays decodes sharing that step (small when it is small).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lanterna.sim.profiles import ModelProfile


@dataclass(frozen=True, slots=True)
class StepSample:
    """``prefill_tokens`` > 0: a lone-prefill latency; else ``decode_seqs`` concurrent decodes' step time."""

    seconds: float
    prefill_tokens: int = 0
    decode_seqs: int = 0


@dataclass(frozen=True, slots=True)
class StepFit:
    step_s: float
    prefill_chunk_s: float
    prefill_token_s: float
    decode_seq_s: float
    rms_rel_error: float  # of the fit over its samples
    num_samples: int

    def predict(self, s: StepSample) -> float:
        if s.prefill_tokens:
            return self.step_s + self.prefill_chunk_s + self.prefill_token_s * s.prefill_tokens
        return self.step_s + self.decode_seq_s * s.decode_seqs


def _theil_sen(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(intercept, slope) by the median of pairwise slopes: one wild sample (a stall on a shared machine) moves
    it little, where least squares follows it."""
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs))
              if xs[j] != xs[i]]
    slope = max(0.0, float(np.median(slopes))) if slopes else 0.0
    return max(0.0, float(np.median([y - slope * x for x, y in zip(xs, ys, strict=True)]))), slope


def fit_steps(samples: Sequence[StepSample]) -> StepFit:
    """Two robust lines: decode step = ``step_s + decode_seq_s x N``, lone prefill = ``step_s + prefill_chunk_s
    + prefill_token_s x L`` (its intercept above the decode one is the per-prefill overhead)."""
    pre = [s for s in samples if s.prefill_tokens]
    dec = [s for s in samples if not s.prefill_tokens]
    if len({s.prefill_tokens for s in pre}) < 2 or len({s.decode_seqs for s in dec}) < 2:
        raise ValueError("need prefill samples of two lengths and decode samples of two batch sizes")
    c, seq = _theil_sen([s.decode_seqs for s in dec], [s.seconds for s in dec])
    a, tok = _theil_sen([s.prefill_tokens for s in pre], [s.seconds for s in pre])
    fit = StepFit(c, max(0.0, a - c), tok, seq, 0.0, len(samples))
    err = np.array([(fit.predict(s) - s.seconds) / s.seconds for s in samples])
    return StepFit(fit.step_s, fit.prefill_chunk_s, tok, seq, float(np.sqrt(np.mean(err**2))), len(samples))


@dataclass(frozen=True, slots=True)
class LinearFitProfile(ModelProfile):
    """A ``ModelProfile`` whose step time is the fitted linear model (the shape still sizes the KV cache)."""

    prefill_chunk_s: float = 0.0
    prefill_token_s: float = 0.0
    decode_seq_s: float = 0.0

    def linear_s(self, num_tokens: int) -> float:
        return 0.0

    def lm_head_s(self, num_rows: int) -> float:
        return 0.0

    def prefill_attn_s(self, new_tokens: int, context: int) -> float:
        return self.prefill_chunk_s + self.prefill_token_s * new_tokens if new_tokens > 0 else 0.0

    def decode_attn_s(self, num_seqs: int, total_context: int) -> float:
        return self.decode_seq_s * num_seqs

    def allreduce_s(self, num_tokens: int) -> float:
        return 0.0


def tiny_cpu_profile(fit: StepFit, name: str = "tiny-cpu-fit") -> LinearFitProfile:
    """The tiny test model's shape (4 layers, 2 KV heads x 64, fp32) with the fitted step times."""
    return LinearFitProfile(name, 4, 256, 4, 2, 64, 688, 8192, dtype_bytes=4, gpu_memory_bytes=1 << 30,
                            overhead_s=fit.step_s, activation_reserve_bytes=64e6,
                            prefill_chunk_s=fit.prefill_chunk_s, prefill_token_s=fit.prefill_token_s,
                            decode_seq_s=fit.decode_seq_s)
