"""Fit a step-time profile to measured engine timings, and the host costs around it (pure: numbers in, profile out).

A CPU replica is one core shared by the engine (engine core + worker) and its API server; in the fidelity
testbed the gateway and the load generator float over the same cores. The simulator models that as an engine
step followed by a host stage (``sim.timing.PhysicsTimer``): the API server's and relay's CPU per output token
and per new request, plus one ``/metrics`` render per scrape (``cluster.virtual``). ``HostCost`` holds those,
measured as process CPU time (``host_costs``); the engine terms are fitted to the probe latencies *after*
subtracting the host work the probes themselves carried, so it is not counted twice.

Engine model: one step costs ``step_s + prefill_chunk_s x chunks + prefill_token_s x prefill tokens
+ prefill_pair_s x attention pairs + decode_seq_s x decoding sequences``, where a chunk of ``n`` new tokens over
``c`` cached ones has ``n x c + n^2 / 2`` causal attention pairs (the convexity a lone 1024-token prompt shows
against a 128-token one). The samples come from a live server (``cli/plan_calibrate.py``):

- a lone prompt of ``L`` tokens with ``max_tokens=1``: one prefill step plus its host work,
  ``step_s + prefill_chunk_s + prefill_token_s x L + prefill_pair_s x L^2/2 + host(1 request, 1 token)``;
- ``N`` concurrent streams of prompt length ``P``: each stream's mean gap is one decode step,
  ``step_s + decode_seq_s x N + decode_ctx_s x (KV tokens attended) + host(N tokens)``; short and long prompts
  separate the per-sequence cost from the attention over context (the ladder's prompts are 320 tokens).

The decode plane is fitted robustly (a Theil-Sen line per prompt length), the prefill curve by relative least squares that drops one
sample far off the rest (a stall on a shared machine).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lanterna.sim.profiles import ModelProfile

MAX_STEP_CV = 0.5  # beyond this a lone stream's gaps are stalls, not a step-time distribution worth drawing from


@dataclass(frozen=True, slots=True)
class StepSample:
    """``prefill_tokens`` > 0: a lone-prefill latency; else ``decode_seqs`` concurrent decodes' step time, their
    KV context summed over the sequences being ``context_tokens`` (mid-stream: prompt + half the output each).
    ``gap_cv``: for a lone stream, the scatter (stdev / mean) of its token gaps, i.e. of single steps."""

    seconds: float
    prefill_tokens: int = 0
    decode_seqs: int = 0
    context_tokens: int = 0
    gap_cv: float | None = None


@dataclass(frozen=True, slots=True)
class HostCost:
    """CPU seconds outside the engine that land on a replica's core: per request, per output token, per scrape;
    and the gateway hop's latency per request (time, not CPU)."""

    request_s: float = 0.0
    token_s: float = 0.0
    scrape_s: float = 0.0
    latency_s: float = 0.0  # not CPU: transit through the gateway's hops, once per request

    def probe_s(self, s: StepSample) -> float:
        """The host work inside one calibration sample (what the engine fit must not absorb)."""
        if s.prefill_tokens:
            return self.request_s + self.token_s
        return self.token_s * s.decode_seqs

    def __add__(self, other: HostCost) -> HostCost:
        return HostCost(self.request_s + other.request_s, self.token_s + other.token_s,
                        self.scrape_s + other.scrape_s, self.latency_s + other.latency_s)


@dataclass(frozen=True, slots=True)
class CpuPhase:
    """One measured load phase: a process's CPU seconds while ``requests`` requests produced ``tokens`` output
    tokens in ``wall_s``, and its CPU rate when idle (its background: a scraped API server renders /metrics)."""

    cpu_s: float
    wall_s: float
    requests: int
    tokens: int
    idle_cpu_per_s: float = 0.0


def host_costs(short: CpuPhase, long: CpuPhase) -> HostCost:
    """Per-request and per-token CPU of one process from two phases that differ in tokens per request (many
    one-token requests; a few long streams): two equations, two unknowns, background subtracted."""
    a = np.array([[short.requests, short.tokens], [long.requests, long.tokens]], dtype=float)
    b = np.array([short.cpu_s - short.idle_cpu_per_s * short.wall_s, long.cpu_s - long.idle_cpu_per_s * long.wall_s])
    req, tok = (float(x) for x in np.linalg.solve(a, b))
    if req < 0 or tok < 0:  # noise swamped one term: put it all on the other, per phase's own unit
        tok = max(0.0, float(b[1]) / long.tokens)
        req = max(0.0, (float(b[0]) - tok * short.tokens) / short.requests)
    return HostCost(req, tok)


@dataclass(frozen=True, slots=True)
class StepFit:
    step_s: float
    prefill_chunk_s: float
    prefill_token_s: float
    decode_seq_s: float
    rms_rel_error: float  # of the fit (engine + host) over its samples
    num_samples: int
    prefill_pair_s: float = 0.0  # per causal attention pair of a prefill chunk
    decode_ctx_s: float = 0.0  # per KV token a decode step attends over (summed over its sequences)
    host: HostCost = HostCost()
    step_cv: float = 0.0  # scatter of single steps (median of the lone streams' gap_cv, <= 0.5); 0 if none measured

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StepFit:
        """The fit as ``dataclasses.asdict`` wrote it (cpu-profile.json, a fidelity report); older files lack the
        newer fields, which keep their defaults."""
        return cls(**{**raw, "host": HostCost(**raw.get("host", {}))})

    def engine_s(self, s: StepSample) -> float:
        if s.prefill_tokens:
            n = s.prefill_tokens
            return self.step_s + self.prefill_chunk_s + self.prefill_token_s * n + self.prefill_pair_s * n * n / 2
        return self.step_s + self.decode_seq_s * s.decode_seqs + self.decode_ctx_s * s.context_tokens

    def predict(self, s: StepSample) -> float:
        return self.engine_s(s) + self.host.probe_s(s)


def _theil_sen(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(intercept, slope) by the median of pairwise slopes: one wild sample (a stall on a shared machine) moves
    it little, where least squares follows it."""
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs))
              if xs[j] != xs[i]]
    slope = max(0.0, float(np.median(slopes))) if slopes else 0.0
    return max(0.0, float(np.median([y - slope * x for x, y in zip(xs, ys, strict=True)]))), slope


def _prefill_curve(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """(intercept, per token, per pair) of ``a + b L + c L^2/2`` by least squares on relative error, all terms
    >= 0; with 4+ samples the one furthest off (over 30%) is dropped once and the rest refitted."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)

    def solve(mask: np.ndarray) -> tuple[float, float, float]:
        cols = [np.ones_like(x), x, x * x / 2]
        for keep in ((0, 1, 2), (0, 1), (0, 2), (1,)):
            a = np.stack([cols[k][mask] for k in keep], axis=1) / y[mask, None]
            coef, *_ = np.linalg.lstsq(a, np.ones(int(mask.sum())), rcond=None)
            if (coef >= 0).all():
                full = [0.0, 0.0, 0.0]
                for k, v in zip(keep, coef, strict=True):
                    full[k] = float(v)
                return full[0], full[1], full[2]
        return 0.0, float(np.median(y / x)), 0.0

    mask = np.ones(len(x), dtype=bool)
    a, b, c = solve(mask)
    rel = np.abs((a + b * x + c * x * x / 2) - y) / y
    if len(x) >= 4 and rel.max() > 0.3:
        mask[int(rel.argmax())] = False
        a, b, c = solve(mask)
    return a, b, c


def fit_steps(samples: Sequence[StepSample], host: HostCost = HostCost()) -> StepFit:
    """Decode line ``step_s + decode_seq_s x N`` (Theil-Sen) and lone-prefill curve ``step_s + prefill_chunk_s
    + prefill_token_s x L + prefill_pair_s x L^2/2``, both fitted to the samples minus ``host``'s share of them
    (its intercept above the decode one is the per-prefill overhead)."""
    pre = [s for s in samples if s.prefill_tokens]
    dec = [s for s in samples if not s.prefill_tokens]
    if len({s.prefill_tokens for s in pre}) < 2 or len({s.decode_seqs for s in dec}) < 2:
        raise ValueError("need prefill samples of two lengths and decode samples of two batch sizes")
    c, seq, ctx = _decode_plane(dec, host)
    ys = [max(1e-6, s.seconds - host.probe_s(s)) for s in pre]
    if len({s.prefill_tokens for s in pre}) >= 3:
        a, tok, pair = _prefill_curve([s.prefill_tokens for s in pre], ys)
    else:
        (a, tok), pair = _theil_sen([s.prefill_tokens for s in pre], ys), 0.0
    fit = StepFit(c, max(0.0, a - c), tok, seq, 0.0, len(samples), pair, ctx, host)
    err = np.array([(fit.predict(s) - s.seconds) / s.seconds for s in samples])
    cvs = [min(s.gap_cv, MAX_STEP_CV) for s in dec if s.gap_cv is not None]
    return StepFit(fit.step_s, fit.prefill_chunk_s, tok, seq, float(np.sqrt(np.mean(err**2))), len(samples), pair,
                   ctx, host, float(np.median(cvs)) if cvs else 0.0)


def _decode_plane(dec: Sequence[StepSample], host: HostCost) -> tuple[float, float, float]:
    """(step, per sequence, per context token) of decode steps: one Theil-Sen line over batch size per prompt
    length; the slopes differ by the attention over each sequence's context, so the context term is the slope
    difference per context token, and the short-prompt line gives the rest. (The lines' intercepts differ too,
    a single long sequence costing more than this predicts, but batches are what saturation is made of.)"""
    ys = [max(0.0, s.seconds - host.probe_s(s)) for s in dec]
    per_seq = [s.context_tokens / s.decode_seqs for s in dec]
    short = [i for i, x in enumerate(per_seq) if x <= 4 * min(per_seq)] if min(per_seq) > 0 else list(range(len(dec)))
    long = [i for i in range(len(dec)) if i not in short]
    c, slope_s = _theil_sen([dec[i].decode_seqs for i in short], [ys[i] for i in short])
    if len({dec[i].decode_seqs for i in long}) < 2:
        return c, slope_s, 0.0
    _, slope_l = _theil_sen([dec[i].decode_seqs for i in long], [ys[i] for i in long])
    ctx_s = float(np.mean([per_seq[i] for i in short]))
    ctx_l = float(np.mean([per_seq[i] for i in long]))
    ctx = max(0.0, (slope_l - slope_s) / (ctx_l - ctx_s))
    return c, max(0.0, slope_s - ctx * ctx_s), ctx


@dataclass(frozen=True, slots=True)
class LinearFitProfile(ModelProfile):
    """A ``ModelProfile`` whose step time is the fitted linear model (the shape still sizes the KV cache)."""

    prefill_chunk_s: float = 0.0
    prefill_token_s: float = 0.0
    prefill_pair_s: float = 0.0
    decode_seq_s: float = 0.0
    decode_ctx_s: float = 0.0

    def linear_s(self, num_tokens: int) -> float:
        return 0.0

    def lm_head_s(self, num_rows: int) -> float:
        return 0.0

    def prefill_attn_s(self, new_tokens: int, context: int) -> float:
        if new_tokens <= 0:
            return 0.0
        pairs = new_tokens * context + new_tokens * new_tokens / 2
        return self.prefill_chunk_s + self.prefill_token_s * new_tokens + self.prefill_pair_s * pairs

    def decode_attn_s(self, num_seqs: int, total_context: int) -> float:
        return self.decode_seq_s * num_seqs + self.decode_ctx_s * total_context

    def allreduce_s(self, num_tokens: int) -> float:
        return 0.0


def tiny_cpu_profile(fit: StepFit, name: str = "tiny-cpu-fit", host: HostCost | None = None) -> LinearFitProfile:
    """The tiny test model's shape (4 layers, 2 KV heads x 64, fp32) with the fitted step times and the host
    costs of the serving arrangement (``host``; default: the ones the fit subtracted)."""
    h = fit.host if host is None else host
    return LinearFitProfile(name, 4, 256, 4, 2, 64, 688, 8192, dtype_bytes=4, gpu_memory_bytes=1 << 30,
                            overhead_s=fit.step_s, activation_reserve_bytes=64e6,
                            prefill_chunk_s=fit.prefill_chunk_s, prefill_token_s=fit.prefill_token_s,
                            prefill_pair_s=fit.prefill_pair_s, decode_seq_s=fit.decode_seq_s,
                            decode_ctx_s=fit.decode_ctx_s,
                            host_request_s=h.request_s, host_token_s=h.token_s, host_scrape_s=h.scrape_s,
                            host_latency_s=h.latency_s, step_cv=fit.step_cv)
