"""Workload generators: deterministic token-id prompts built from shared segments.

A prompt is a tuple of ``Segment``s (system prompt, question, earlier answers). Segments that are
shared (a group's system prompt, a conversation's history) are the *same* token arrays, so prefix
sharing is exact in token space: the virtual cluster feeds the ids straight to the engines, and the
HTTP runner renders each segment to text once (``TextRenderer``) so shared prefixes are shared text.
Same config + same seed -> the same prompts in the same order.

Memory: segments are numpy int32 arrays (4 bytes a token); a request's ``token_ids`` list is built
only when it is sent.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lanterna.bench.config import (
    MultiTurnWorkload,
    RandomWorkload,
    SharedPrefixWorkload,
    TraceWorkload,
    Workload,
)

Role = Literal["system", "user", "assistant"]
VOCAB_LO, VOCAB_HI = 300, 8000  # ordinary ids inside even small (8k) vocabularies; avoids special tokens


@dataclass(frozen=True, slots=True)
class Segment:
    key: str  # stable identity: equal keys are equal tokens (render caches by it)
    tokens: np.ndarray
    role: Role = "user"


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One request to send: its segments, output length, and grouping facts for reports and routing."""

    index: int
    segments: tuple[Segment, ...]
    output_len: int
    group: int = -1
    session: str | None = None
    arrival_s: float | None = None  # trace replay only: offset from the trace start

    @property
    def num_prompt_tokens(self) -> int:
        return sum(len(s.tokens) for s in self.segments)

    def token_ids(self) -> list[int]:
        if len(self.segments) == 1:
            return self.segments[0].tokens.tolist()  # type: ignore[no-any-return]
        return np.concatenate([s.tokens for s in self.segments]).tolist()  # type: ignore[no-any-return]


def _tokens(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(VOCAB_LO, VOCAB_HI, size=n, dtype=np.int32)


def _length(rng: np.random.Generator, mean: int, ratio: float) -> int:
    if ratio <= 0:
        return mean
    lo, hi = max(1, int(mean * (1 - ratio))), max(1, int(mean * (1 + ratio)))
    return int(rng.integers(lo, hi + 1))


def random_items(cfg: RandomWorkload, seed: int) -> Iterator[WorkItem]:
    rng = np.random.default_rng(seed)
    pool = []
    for i in range(cfg.num_prompts):
        n_in = _length(rng, cfg.input_len, cfg.range_ratio)
        n_out = _length(rng, cfg.output_len, cfg.range_ratio)
        pool.append((Segment(f"r{i}", _tokens(rng, n_in)), n_out))
    idx = 0
    while True:
        seg, n_out = pool[idx % len(pool)]
        yield WorkItem(idx, (seg,), n_out, group=idx % len(pool))
        idx += 1


def shared_prefix_items(cfg: SharedPrefixWorkload, seed: int) -> Iterator[WorkItem]:
    """Requests cycle through the shuffled G x P prompts (reshuffled every pass, same seed -> same order)."""
    rng = np.random.default_rng(seed)
    systems = [Segment(f"s{g}", _tokens(rng, cfg.system_len), "system") for g in range(cfg.num_groups)]
    questions = [
        [Segment(f"q{g}.{p}", _tokens(rng, cfg.question_len)) for p in range(cfg.prompts_per_group)]
        for g in range(cfg.num_groups)
    ]
    order = [(g, p) for g in range(cfg.num_groups) for p in range(cfg.prompts_per_group)]
    idx = 0
    while True:
        rng.shuffle(order)
        for g, p in order:
            segs = (systems[g], questions[g][p]) if cfg.system_len else (questions[g][p],)
            yield WorkItem(idx, segs, cfg.output_len, group=g)
            idx += 1


def multi_turn_items(cfg: MultiTurnWorkload, seed: int) -> Iterator[WorkItem]:
    """Round-major order (every user's round r before any round r+1), so history is causal when the
    gap between a user's turns (num_users / rate) exceeds a request's latency. Answers are synthetic
    tokens of ``output_len`` (what a benchmark must assume to be reproducible)."""
    rng = np.random.default_rng(seed)
    system = Segment("sys", _tokens(rng, cfg.system_len), "system")
    idx, epoch = 0, 0
    while True:
        history: list[list[Segment]] = [[system] if cfg.system_len else [] for _ in range(cfg.num_users)]
        for r in range(cfg.num_rounds):
            for u in range(cfg.num_users):
                q = Segment(f"e{epoch}u{u}q{r}", _tokens(rng, cfg.question_len), "user")
                history[u].append(q)
                yield WorkItem(idx, tuple(history[u]), cfg.output_len, group=u, session=f"e{epoch}-u{u}")
                history[u].append(Segment(f"e{epoch}u{u}a{r}", _tokens(rng, cfg.output_len), "assistant"))
                idx += 1
        epoch += 1


class _BlockCache:
    """hash id -> token block, bounded LRU; a block's tokens depend only on (seed, hash id)."""

    def __init__(self, seed: int, block_tokens: int, capacity: int = 65536) -> None:
        self._seed, self._n, self._cap = seed, block_tokens, capacity
        self._blocks: OrderedDict[int, Segment] = OrderedDict()

    def get(self, hash_id: int) -> Segment:
        seg = self._blocks.get(hash_id)
        if seg is None:
            rng = np.random.default_rng([self._seed, hash_id])
            seg = Segment(f"h{hash_id}", _tokens(rng, self._n))
            self._blocks[hash_id] = seg
            if len(self._blocks) > self._cap:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(hash_id)
        return seg


def trace_items(cfg: TraceWorkload, seed: int) -> Iterator[WorkItem]:
    """Mooncake JSONL: each hash id stands for ``block_tokens`` tokens; equal id prefixes share tokens.
    The last block is cut to ``input_length``; a prompt longer than its ids is padded with unique tokens."""
    cache = _BlockCache(seed, cfg.block_tokens)
    t0: float | None = None
    with cfg.path.open() as fh:
        idx = 0
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                ts, n_in, n_out = float(row["timestamp"]), int(row["input_length"]), int(row["output_length"])
                hash_ids = [int(h) for h in row.get("hash_ids", [])]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{cfg.path}:{line_no}: bad trace record ({exc})") from None
            t0 = ts if t0 is None else t0
            segs: list[Segment] = []
            have = 0
            for h in hash_ids:
                if have >= n_in:
                    break
                blk = cache.get(h)
                take = min(cfg.block_tokens, n_in - have)
                segs.append(blk if take == cfg.block_tokens else Segment(f"{blk.key}:{take}", blk.tokens[:take]))
                have += take
            if have < n_in:
                rng = np.random.default_rng([seed, 1 << 40, idx])
                segs.append(Segment(f"pad{idx}", _tokens(rng, n_in - have)))
            group = hash_ids[0] if hash_ids else -1
            yield WorkItem(idx, tuple(segs), max(1, n_out), group=group, arrival_s=(ts - t0) / 1000.0)
            idx += 1
            if cfg.max_requests is not None and idx >= cfg.max_requests:
                return


def iter_workload(cfg: Workload, seed: int) -> Iterator[WorkItem]:
    """The item stream for a workload (endless except trace)."""
    if isinstance(cfg, RandomWorkload):
        return random_items(cfg, seed)
    if isinstance(cfg, SharedPrefixWorkload):
        return shared_prefix_items(cfg, seed)
    if isinstance(cfg, MultiTurnWorkload):
        return multi_turn_items(cfg, seed)
    return trace_items(cfg, seed)
