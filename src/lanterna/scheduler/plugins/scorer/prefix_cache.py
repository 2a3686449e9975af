"""Approximate prefix-cache scorer, type ``prefix-cache-scorer`` (llm-d).

score = matched blocks / total blocks, where blocks are ``blockSizeTokens x 4`` bytes of the prompt text
(chat: the whole conversation, see ``kvindex.approx.chat_prefix_text``), hashed with chained xxhash64
seeded by model (+ cache salt), matched against a per-endpoint LRU of the hashes the gateway routed
there, stopping at the first miss. Prompts shorter than one block score 0 everywhere.

Data producer: computes the hashes and the per-endpoint match once per request into ``req.state``
(``STATE_PREFIX_APPROX``, a ``PrefixMatch``) for the P/D decider, ``no-hit-lru-scorer`` and
``cost-model-scorer``. Pre-request hook: inserts the hashes into the LRU of every picked endpoint
(decode and, with P/D, prefill), as llm-d does, before the response shows whether the cache really hit.

Params: ``blockSizeTokens`` (16), ``maxPrefixBlocksToMatch`` (256), ``lruCapacityPerServer`` (31250);
legacy ``blockSize``/``hashBlockSize`` give the block size in characters; ``autoTune`` is accepted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from lanterna.endpoints.types import Endpoint
from lanterna.kvindex.approx import ApproxPrefixIndex
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import (
    STATE_PREFIX_APPROX,
    PrefixMatch,
    SchedRequest,
    SchedulingResult,
)

TYPE = "prefix-cache-scorer"
CHARS_PER_TOKEN = 4


class Params(PluginParams):
    blockSizeTokens: int = Field(16, ge=1)
    blockSize: int | None = Field(None, ge=1)
    hashBlockSize: int | None = Field(None, ge=1)
    maxPrefixBlocksToMatch: int = Field(256, ge=1)
    lruCapacityPerServer: int = Field(31250, ge=1)
    autoTune: bool = False


@dataclass(slots=True)
class PrefixCacheScorer:
    name: str
    index: ApproxPrefixIndex
    type_name: str = TYPE
    state_key: str = field(init=False)
    _hashes_key: str = field(init=False)

    def __post_init__(self) -> None:
        self.state_key = f"{STATE_PREFIX_APPROX}/{self.name}"
        self._hashes_key = self.state_key + "/hashes"  # built once, not per request

    @property
    def block_size_tokens(self) -> int:
        return max(1, self.index.block_chars // CHARS_PER_TOKEN)

    def _hashes(self, req: SchedRequest) -> list[int]:
        key = self._hashes_key
        got = req.state.get(key)
        if got is None:
            got = req.state[key] = self.index.hashes(req.model, req.prompt_text, req.cache_salt)
        return got

    def produce(self, req: SchedRequest, candidates: list[Endpoint]) -> None:
        hashes = self._hashes(req)
        m = PrefixMatch(
            total_blocks=len(hashes),
            block_size_tokens=self.block_size_tokens,
            matched=dict(self.index.match(hashes, [e.id for e in candidates])),
        )
        req.state[self.state_key] = m
        req.state.setdefault(STATE_PREFIX_APPROX, m)

    def match_for(self, req: SchedRequest, candidates: list[Endpoint]) -> PrefixMatch:
        m = req.state.get(self.state_key)
        if m is None:
            self.produce(req, candidates)
            m = req.state[self.state_key]
        return m  # type: ignore[no-any-return]

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        m = self.match_for(req, candidates)
        if m.total_blocks == 0:
            return dict.fromkeys([e.id for e in candidates], 0.0)
        t = m.total_blocks
        got = m.matched
        return {e.id: got.get(e.id, 0) / t for e in candidates}

    def pre_request(self, req: SchedRequest, result: SchedulingResult) -> None:
        hashes = self._hashes(req)
        if not hashes:
            return
        for res in result.profile_results.values():
            if res.primary is not None:
                self.index.insert(res.primary.id, hashes)

    def endpoint_removed(self, endpoint_id: str) -> None:
        self.index.remove_endpoint(endpoint_id)


def block_chars(p: Params) -> int:
    return p.hashBlockSize or p.blockSize or p.blockSizeTokens * CHARS_PER_TOKEN


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> PrefixCacheScorer:
    p = parse_params(Params, TYPE, name, params)
    index = ApproxPrefixIndex(block_chars(p), p.maxPrefixBlocksToMatch, p.lruCapacityPerServer)
    return PrefixCacheScorer(name=name, index=index)
