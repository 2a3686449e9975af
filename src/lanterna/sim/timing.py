"""Step time from the shape of a batch: the engine asks, a timer answers in seconds.

The engine stays ignorant of hardware; a ``StepTimer`` turns one iteration's batch (prefill chunks,
decode contexts, KV bytes loaded from lower tiers) into a duration. ``PhysicsTimer`` uses a
``ModelProfile`` calibrated on an H100 (``data/h100_kernel_times.json``); the simpler timers keep
tests and CPU demos predictable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from lanterna.sim.profiles import PROFILES, ModelProfile, get_profile


@dataclass(slots=True)
class BatchShape:
    """One engine step: ``prefill_chunks`` are (new tokens, context before the chunk) pairs.

    ``num_prefill_sampled`` counts the chunks that finish their prompt (they run the lm_head);
    None means "assume every chunk does" for callers that do not know.
    """

    prefill_chunks: list[tuple[int, int]] = field(default_factory=list)
    decode_contexts: list[int] = field(default_factory=list)
    num_loaded_bytes: int = 0
    num_prefill_sampled: int | None = None

    @property
    def num_tokens(self) -> int:
        return sum(n for n, _ in self.prefill_chunks) + len(self.decode_contexts)


class StepTimer(Protocol):
    def step_time(self, batch: BatchShape) -> float:
        """Seconds one engine iteration takes for ``batch`` (pure; called once per step)."""
        ...


@dataclass(frozen=True, slots=True)
class ConstantTimer:
    """Every step takes ``step_s``: the simplest model, for tests that count steps."""

    step_s: float = 0.01

    def step_time(self, batch: BatchShape) -> float:
        return self.step_s


@dataclass(frozen=True, slots=True)
class PerTokenTimer:
    """``base_s + per_token_s x tokens``: a linear model good enough for CPU demos."""

    base_s: float = 0.005
    per_token_s: float = 0.0002

    def step_time(self, batch: BatchShape) -> float:
        return self.base_s + self.per_token_s * batch.num_tokens


@dataclass(frozen=True, slots=True)
class PhysicsTimer:
    """Roofline-style step time from a calibrated ``ModelProfile``.

    overhead + linear layers (max of weight-read floor and per-token GEMM cost) + lm_head (rows
    producing a token) + prefill attention (chunk x context) + decode attention (KV bytes / bandwidth)
    + TP all-reduce + tier loads + the host stage (API-server work per token and per new request, when the
    profile says it shares the engine's cores). Each term is a method so tests can check it against calibration.
    """

    profile: ModelProfile

    def step_time(self, batch: BatchShape) -> float:
        p = self.profile
        num_tokens = 0
        num_sampled = len(batch.decode_contexts)
        attn = 0.0
        for new, ctx in batch.prefill_chunks:
            num_tokens += new
            attn += p.prefill_attn_s(new, ctx)
        # only a chunk that completes its prompt samples (runs the lm_head)
        sampled = batch.num_prefill_sampled
        num_sampled += len(batch.prefill_chunks) if sampled is None else sampled
        num_tokens += len(batch.decode_contexts)
        if batch.decode_contexts:
            attn += p.decode_attn_s(len(batch.decode_contexts), sum(batch.decode_contexts))
        if num_tokens == 0 and batch.num_loaded_bytes == 0:
            return 0.0
        t = p.overhead_s + p.linear_s(num_tokens) + p.lm_head_s(num_sampled) + attn
        t += p.allreduce_s(num_tokens)
        t += batch.num_loaded_bytes / p.load_bandwidth_bps
        if p.host_token_s or p.host_request_s:
            # the host stage: the API server turns this step's tokens into SSE frames (and answers the requests
            # whose first token this is) on the same core before the engine's next step gets it back
            first = len(batch.prefill_chunks) if sampled is None else sampled
            t += p.host_token_s * num_sampled + p.host_request_s * first
        return t


def make_timer(mode: str, profile: str | None = None, **overrides: Any) -> StepTimer:
    """Build a timer by name: ``constant``, ``per-token`` or ``physics`` (needs a profile name).

    ``overrides`` set the timer's fields (``step_s``, ``base_s``, ``per_token_s``) or, for physics,
    any ``ModelProfile`` field.
    """
    mode = mode.replace("_", "-").lower()
    if mode == "constant":
        return ConstantTimer(**overrides)
    if mode in ("per-token", "pertoken", "linear"):
        return PerTokenTimer(**overrides)
    if mode == "physics":
        prof = get_profile(profile or "llama-3.1-8b-h100", **overrides)
        return PhysicsTimer(prof)
    raise ValueError(f"unknown timer mode {mode!r}; known: constant, per-token, physics ({sorted(PROFILES)})")
