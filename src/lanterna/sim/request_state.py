"""Engine-side state of one request (vLLM's ``Request``) and its pre-drawn output stream.

Why pre-drawn: sampling was a fifth of the virtual cluster's CPU when every token called a
``random.Random``. A request's output token ids are now drawn in numpy chunks and its finishing step
(``length`` at ``max_tokens``/``max_model_len``, or ``stop`` with EOS after ``min_tokens``) is decided
once at admission: EOS with probability p per token after ``min_tokens`` is a geometric variable, so
the distribution is the one a per-token coin would give. Streams are seeded by (engine seed, request
seed or id), so a request's tokens do not depend on what else runs beside it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from lanterna.sim.types import EngineRequest, FinishReason

CHUNK = 256  # tokens drawn per refill: bounds memory for huge max_tokens, amortises numpy calls


class TokenStream:
    """Output token ids of one request, drawn ``CHUNK`` at a time from a seeded numpy generator."""

    __slots__ = ("_gen", "_vocab", "_left", "next")

    def __init__(self, key: str, vocab: int, num_tokens: int) -> None:
        self._gen = np.random.default_rng(random.Random(key).getrandbits(64))
        self._vocab = vocab
        self._left = num_tokens
        self.next = iter(()).__next__  # the hot path calls ``next()``; StopIteration -> ``refill``

    def refill(self) -> int:
        n = min(CHUNK, max(1, self._left))
        self._left -= n
        it = iter(self._gen.integers(0, self._vocab, size=n).tolist())
        self.next = it.__next__
        return self.next()

    def draw(self) -> int:
        try:
            return self.next()
        except StopIteration:
            return self.refill()

    def geometric(self, p: float) -> int:
        """Trials until the first success (>= 1) with success probability ``p``."""
        return 1 if p >= 1.0 else int(self._gen.geometric(p)) if p > 0.0 else 1 << 62


@dataclass(slots=True, eq=False)
class SeqState:
    """What the engine tracks per request; ``stop_at`` and ``stop_reason`` are fixed at creation."""

    req: EngineRequest
    tokens: list[int]  # prompt + sampled outputs
    stream: TokenStream
    lora_id: int | None
    stop_at: int  # output count of the last token
    stop_reason: FinishReason  # "length" or "stop" (EOS, then the last token is ``eos_id``)
    order: int = 0  # admission counter: the priority policy's final tie-break
    blocks: list[int] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)  # of the full blocks of ``tokens`` hashed so far
    num_computed: int = 0  # tokens whose KV is in ``blocks``
    num_cached_blocks: int = 0  # leading blocks registered in the prefix cache
    num_output: int = 0
    started: bool = False
    num_cached_tokens: int = 0
    num_preemptions: int = 0
    finished: bool = False

    @property
    def sort_key(self) -> tuple[int, float, int]:
        """vLLM's priority order: lower ``priority`` first, then earlier arrival."""
        return (self.req.priority, self.req.arrival_time, self.order)


def make_seq(req: EngineRequest, engine_seed: int, vocab: int, max_model_len: int, eos_p: float,
             lora_id: int | None, order: int) -> SeqState:
    """A request's state with its output length and finish reason decided up front."""
    n = len(req.prompt_token_ids)
    length_at = 1 if req.do_remote_decode else min(req.max_tokens, max_model_len - n)
    key = req.seed if req.seed is not None else req.request_id
    stream = TokenStream(f"{engine_seed}:{key}", vocab, length_at)
    stop_at, reason = length_at, "length"
    if not req.ignore_eos and req.eos_token_id is not None and not req.do_remote_decode:
        eos_at = req.min_tokens + stream.geometric(eos_p)
        if eos_at <= length_at:
            stop_at, reason = eos_at, "stop"
    return SeqState(req, list(req.prompt_token_ids), stream, lora_id, stop_at, reason, order)
