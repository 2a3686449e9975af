"""Engine-side state of one request (vLLM's ``Request``) and its pre-drawn output stream.

Why pre-drawn: sampling was a fifth of the virtual cluster's CPU when every token called a
``random.Random``. Token ids are now drawn in bulk by numpy: one call every few thousand tokens from
the engine's stream (seeded by the engine seed; an unseeded request's ids depend on the batch order,
still the same for the same inputs), or, for a request with its own ``seed``, from a
stream seeded by (engine seed, request seed), so that request's tokens do not depend on what runs
beside it (vLLM's per-request seed). The finishing step (``length`` at ``max_tokens``/``max_model_len``,
or ``stop`` with EOS after ``min_tokens``) is decided once, at ``add_request``: EOS with probability p
per token after ``min_tokens`` is a geometric variable, the distribution a per-token coin gives.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from lanterna.sim.types import EngineRequest, FinishReason

CHUNK = 256  # ids drawn per refill of a seeded request's stream: amortises numpy, bounds memory


class TokenStream:
    """Token ids from a seeded numpy generator: ``take(n)`` in bulk, ``draw()`` one at a time."""

    __slots__ = ("_gen", "_vocab", "_buf", "_pos")

    def __init__(self, key: str, vocab: int) -> None:
        self._gen = np.random.default_rng(random.Random(key).getrandbits(64))
        self._vocab = vocab
        self._buf: list[int] = []
        self._pos = 0

    def take(self, n: int) -> list[int]:
        """``n`` fresh token ids in one numpy call."""
        out: list[int] = self._gen.integers(0, self._vocab, size=n).tolist()
        return out

    def draw(self) -> int:
        if self._pos == len(self._buf):
            self._buf, self._pos = self.take(CHUNK), 0
        self._pos += 1
        return self._buf[self._pos - 1]

    def geometric(self, p: float) -> int:
        """Trials until the first success (>= 1) with success probability ``p``."""
        if p >= 1.0:
            return 1
        return int(self._gen.geometric(p)) if p > 0.0 else 1 << 62


@dataclass(slots=True, eq=False)
class SeqState:
    """What the engine tracks per request; ``stop_at`` and ``stop_reason`` are fixed at creation."""

    req: EngineRequest
    tokens: list[int]  # prompt + sampled outputs
    stream: TokenStream | None  # own stream for seeded requests; None draws from the engine's
    lora_id: int | None
    stop_at: int  # output count of the last token
    stop_reason: FinishReason  # "length" or "stop" (EOS, then the last token is ``eos_id``)
    order: int = 0  # admission counter: the priority policy's final tie-break
    rid: str = ""  # req.request_id, kept here so the hot loop touches one object less
    blocks: list[int] = field(default_factory=list)
    num_slots: int = 0  # NOTE: always len(blocks) x block_size (KV slots held)
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


def make_seq(req: EngineRequest, stream: TokenStream | None, eos_source: TokenStream, max_model_len: int,
             eos_p: float, lora_id: int | None, order: int) -> SeqState:
    """A request's state with its output length and finish reason decided up front."""
    length_at = 1 if req.do_remote_decode else min(req.max_tokens, max_model_len - len(req.prompt_token_ids))
    stop_at: int = length_at
    reason: FinishReason = "length"
    if not req.ignore_eos and req.eos_token_id is not None and not req.do_remote_decode:
        eos_at = req.min_tokens + eos_source.geometric(eos_p)
        if eos_at <= length_at:
            stop_at, reason = eos_at, "stop"
    return SeqState(req, list(req.prompt_token_ids), stream, lora_id, stop_at, reason, order, req.request_id)
