"""Cost-model scorer, type ``cost-model-scorer`` (Lanterna's own, in the style of Dynamo's KV router).

Scores an endpoint by how long this request would wait there, in one currency (prefill tokens of work):

    cost(e) = prefillScale x uncached(e) + queueScale x queued(e) + decodeScale x in_flight_decode_seqs(e)
            + kvScale x in_flight_kv_tokens(e) + waitingPenalty x metrics.num_waiting(e)
            + recentScale x recent(e)
    score(e) = 1 - (cost(e) - cost_min) / max(cost_max - cost_min, minSpanTokens)

``uncached(e) = prompt_tokens - cached(e)``. With token ids and ``services.kv_index``, cached comes from
the precise KV-event index (tier-weighted: a CPU-tier block counts 0.8), raised to the prefixes this
scorer sent to ``e`` that are still in flight (``pending.py``: the index hears of a prefix only after its
prefill step, and a second request of a new prefix must not recompute it elsewhere); otherwise from the
approximate index of the config's ``prefix-cache-scorer`` (or a private one). ``queued(e)``: the
gateway's ``in_flight_prefill_tokens`` counts whole prompts, so it is scaled by the uncached share of the
requests this scorer sent to ``e`` (a warm replica's queue of mostly-cached prompts is short).

Why these weights. A miss weighs 4x queued work (``queueScale`` 0.25) because it also delays everything
queued behind it: under overload, chasing a shorter queue with a miss lengthens every queue (cold-prefix
scenario: with queueScale 1 the hit rate fell from 0.83 to 0.64 and P99 TTFT rose from 3 s to 54 s). The
decode term is small: co-running sequences slow a step a little, whereas a miss costs the whole history;
it settles otherwise equal choices (a new chat session whose only hit is the shared system prompt goes to
the least loaded replica) while a warm session with H cached tokens moves only when its replica runs
H/128 more sequences. ``recent(e)`` counts the requests this scorer sent to ``e`` lately (each decays by
1 - 1/recentWindow per request scheduled anywhere, so the sums hold each endpoint's share of the last ~window
requests): chat sessions are in flight only part of the time, so in-flight counts alone seed new sessions
by a noisy snapshot and leave replicas owning 3 and 5 of 16 sessions; charging recent traffic spreads the
sessions that will bring it (24 x 8 chat on 4 sims: balance 1.25 -> 1.02, hit ratio 0.985 -> 0.980 of one replica's), while a warm
history outweighs it. In-flight KV tokens are not charged by default (``kvScale`` 0): that was the old
model, and in long-context chat the KV of a replica's other sessions outweighed one history, so every
next turn moved and lost its cache.

Params: ``prefillScale`` (1.0), ``queueScale`` (0.25), ``decodeScale`` (prefill tokens per in-flight
sequence, 128), ``kvScale`` (per in-flight KV token, 0), ``waitingPenalty`` (per scraped waiting request,
0), ``recentScale`` (prefill tokens per recent request, 64; 0 = off), ``recentWindow`` (requests, 64),
``minSpanTokens`` (256: smaller cost gaps score proportionally less than 1, so tie-break scorers can act),
``blockSizeTokens`` (16, until the precise index knows the server's). Data producer: matches once
per request before the profiles run and publishes in-flight prefixes as ``STATE_PREFIX_PENDING``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from lanterna.endpoints.types import Endpoint
from lanterna.kvindex.approx import ApproxPrefixIndex
from lanterna.scheduler.framework.interfaces import KVIndexView, Plugin, SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import (
    STATE_PREFIX_PRECISE,
    PrefixMatch,
    SchedRequest,
    SchedulingResult,
)
from lanterna.scheduler.plugins.scorer.pending import STATE_PREFIX_PENDING, PendingPrefixes
from lanterna.scheduler.plugins.scorer.prefix_cache import PrefixCacheScorer

TYPE = "cost-model-scorer"
_STATE_SENT = "lanterna/cost-model/sent"  # (endpoint id, prompt tokens, uncached tokens) added at pre-request
_STATE_UNCACHED = _STATE_SENT + "/uncached"  # uncached prompt tokens per endpoint id, from ``costs``
_NO_UNCACHED: dict[str, float] = {}  # read-only default
_STATE_CACHED = "lanterna/cost-model/cached"  # endpoint id -> cached tokens, once per request


class Params(PluginParams):
    prefillScale: float = Field(1.0, ge=0)
    queueScale: float = Field(0.25, ge=0)
    decodeScale: float = Field(128.0, ge=0)
    kvScale: float = Field(0.0, ge=0)
    waitingPenalty: float = Field(0.0, ge=0)
    minSpanTokens: float = Field(256.0, ge=0)
    recentScale: float = Field(64.0, ge=0)
    recentWindow: int = Field(64, ge=1)
    blockSizeTokens: int = Field(16, ge=1)
    # Blocks the built-in approximate prefix index keeps per endpoint (llm-d's lruCapacityPerServer; ~187 bytes
    # each, so the default is ~6 MB per endpoint when full). Size it to the servers' real KV cache in blocks.
    lruCapacityPerServer: int = Field(31250, ge=1)


def precise_prefix_match(
    req: SchedRequest, kv_index: KVIndexView, candidates: list[Endpoint], default_block_size: int
) -> PrefixMatch | None:
    """The precise index's match for ``req``, computed once per cycle into ``STATE_PREFIX_PRECISE``."""
    got = req.state.get(STATE_PREFIX_PRECISE)
    if isinstance(got, PrefixMatch):
        return got
    if req.token_ids is None:
        return None
    bs = kv_index.block_size_for(req.model) or default_block_size
    matched = kv_index.match(req.model, req.lora, req.token_ids, [e.id for e in candidates])
    m = PrefixMatch(total_blocks=len(req.token_ids) // bs, block_size_tokens=bs, matched=dict(matched))
    req.state[STATE_PREFIX_PRECISE] = m
    return m


@dataclass(slots=True)
class _Sent:
    """Per endpoint: prompt and uncached tokens of the requests this scorer sent there, still in flight."""

    prompt: float = 0.0
    uncached: float = 0.0


@dataclass(slots=True)
class CostModelScorer:
    name: str
    params: Params
    kv_index: KVIndexView | None
    approx: PrefixCacheScorer
    owns_approx: bool = True
    type_name: str = TYPE
    sent: dict[str, _Sent] = field(default_factory=dict)
    pending: PendingPrefixes = field(default_factory=PendingPrefixes)
    recent: dict[str, tuple[float, int]] = field(default_factory=dict)  # endpoint id -> (sum, tick of last add)
    tick: int = 0  # requests this scorer has placed
    keep: float = field(init=False)  # what a recent request still weighs after one more is placed

    def __post_init__(self) -> None:
        self.keep = 1.0 - 1.0 / self.params.recentWindow

    def bind(self, plugins: Mapping[str, Plugin]) -> None:
        shared = [p for p in plugins.values() if isinstance(p, PrefixCacheScorer)]
        if shared:
            self.approx, self.owns_approx = shared[0], False

    def produce(self, req: SchedRequest, candidates: list[Endpoint]) -> None:
        """Data producer: match once before the profiles run, so ``no-hit-lru-scorer`` sees in-flight
        prefixes (``STATE_PREFIX_PENDING``) as hits."""
        self._cached(req, candidates)

    def _cached(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        """Cached tokens per endpoint id (computed once per request into ``req.state``)."""
        got = req.state.get(_STATE_CACHED)
        if got is not None:
            return got  # type: ignore[no-any-return]
        cached: dict[str, float] | None = None
        if self.kv_index is not None and req.token_ids is not None:
            m = precise_prefix_match(req, self.kv_index, candidates, self.params.blockSizeTokens)
            if m is not None:
                bs = m.block_size_tokens
                cached = {k: v * bs for k, v in m.matched.items()}
                pend = self.pending.match(req, bs, candidates)
                if pend:
                    req.state[STATE_PREFIX_PENDING] = PrefixMatch(m.total_blocks, bs, pend)
                for eid, n in pend.items():
                    if n * bs > cached.get(eid, 0.0):
                        cached[eid] = n * bs
        if cached is None:
            am = self.approx.match_for(req, candidates)
            bs = am.block_size_tokens or self.params.blockSizeTokens
            cached = {k: v * bs for k, v in am.matched.items()}
        req.state[_STATE_CACHED] = cached
        return cached

    def costs(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        """Cost per endpoint id in prefill tokens (also stored for ``pre_request``)."""
        p = self.params
        cached = self._cached(req, candidates)
        prompt = float(req.num_prompt_tokens_estimate)
        out: dict[str, float] = {}
        own: dict[str, float] = {}
        keep = self.keep
        for e in candidates:
            ld = e.load
            uncached = prompt - cached.get(e.id, 0.0)
            if uncached < 0.0:
                uncached = 0.0
            own[e.id] = uncached
            queued = float(ld.in_flight_prefill_tokens)
            seqs = ld.in_flight_decode_seqs
            if queued == 0 and seqs == 0 and ld.in_flight_requests > 0:  # counts requests only
                queued, seqs = prompt * ld.in_flight_requests, ld.in_flight_requests
            s = self.sent.get(e.id)
            if s is not None:
                if ld.in_flight_requests == 0:  # nothing in flight: forget (heals missed completions)
                    s.prompt = s.uncached = 0.0
                elif s.prompt > 0:
                    queued *= min(1.0, s.uncached / s.prompt)
            out[e.id] = (
                p.prefillScale * uncached
                + p.queueScale * queued
                + p.decodeScale * seqs
                + p.kvScale * ld.in_flight_kv_tokens
                + p.waitingPenalty * e.metrics.num_waiting
            )
            if p.recentScale:
                r = self.recent.get(e.id)
                if r is not None:
                    out[e.id] += p.recentScale * r[0] * keep ** (self.tick - r[1])
        req.state[_STATE_UNCACHED] = own
        return out

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        c = self.costs(req, candidates)
        if not c:
            return {}
        lo, hi = min(c.values()), max(c.values())
        span = max(hi - lo, self.params.minSpanTokens)
        if span <= 0:
            return dict.fromkeys(c, 1.0)
        return {k: 1.0 - (v - lo) / span for k, v in c.items()}

    def pre_request(self, req: SchedRequest, result: SchedulingResult) -> None:
        if self.owns_approx:
            self.approx.pre_request(req, result)
        target = result.primary.primary
        if target is None:
            return
        prompt = float(req.num_prompt_tokens_estimate)
        uncached = req.state.get(_STATE_UNCACHED, _NO_UNCACHED).get(target.id, prompt)
        s = self.sent.get(target.id)
        if s is None:  # not ``setdefault(id, _Sent())``: that builds a _Sent per request
            s = self.sent[target.id] = _Sent()
        s.prompt += prompt
        s.uncached += uncached
        if self.params.recentScale:
            self.tick += 1
            r = self.recent.get(target.id)
            self.recent[target.id] = ((r[0] * self.keep ** (self.tick - r[1]) if r else 0.0) + 1.0, self.tick)
        req.state[_STATE_SENT] = (target.id, prompt, uncached)
        if self.kv_index is not None and req.token_ids is not None:
            self.pending.add(
                req, target.id, self.kv_index.block_size_for(req.model) or self.params.blockSizeTokens
            )

    def response_complete(
        self, req: SchedRequest, result: SchedulingResult, endpoint_id: str, num_cached_tokens: int | None
    ) -> None:
        got = req.state.pop(_STATE_SENT, None)
        if got is not None:
            eid, prompt, uncached = got
            s = self.sent.get(eid)
            if s is not None:
                s.prompt = max(0.0, s.prompt - prompt)
                s.uncached = max(0.0, s.uncached - uncached)
        self.pending.remove(req)

    def endpoint_removed(self, endpoint_id: str) -> None:
        self.sent.pop(endpoint_id, None)
        self.recent.pop(endpoint_id, None)
        self.pending.remove_endpoint(endpoint_id)
        if self.owns_approx:
            self.approx.endpoint_removed(endpoint_id)


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> CostModelScorer:
    p = parse_params(Params, TYPE, name, params)
    approx = PrefixCacheScorer(name=f"{name}/approx", index=ApproxPrefixIndex(capacity_per_endpoint=p.lruCapacityPerServer))
    return CostModelScorer(name=name, params=p, kv_index=services.kv_index, approx=approx)
