"""Cost-model scorer, type ``cost-model-scorer`` (Lanterna's own, in the style of Dynamo's KV router).

Puts cache affinity and load in one currency, KV blocks of work, so a hot prefix cannot pile a burst onto
one replica: once its queue of in-flight work costs more than recomputing the prefix elsewhere, the next
request goes elsewhere (and warms that replica too).

    cost(e) = prefillScale x (uncached_prompt_tokens(e) + load.in_flight_prefill_tokens) / B
            + decodeScale  x load.in_flight_kv_tokens / B
            + waitingPenalty x metrics.num_waiting
    score(e) = (cost_max - cost(e)) / (cost_max - cost_min)      (all equal -> 1.0)

B is the block size. ``uncached = prompt_tokens - cached(e)``, where cached comes from the precise
KV-event index when ``services.kv_index`` is set and the request has token ids (tier-weighted: a CPU-tier
block counts 0.8 of a GPU one), else from the approximate index of the config's ``prefix-cache-scorer``
(or a private one with its defaults, fed at pre-request, when the config has none). ``load`` is the
gateway's in-flight accounting; if it counts requests but no tokens, each in-flight request is taken to
cost this request's prompt. Params: ``prefillScale`` (1.0), ``decodeScale`` (1.0), ``waitingPenalty``
(blocks per waiting request, 8.0), ``blockSizeTokens`` (16, until the precise index knows the server's)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
from lanterna.scheduler.plugins.scorer._norm import inverse_minmax
from lanterna.scheduler.plugins.scorer.prefix_cache import PrefixCacheScorer

TYPE = "cost-model-scorer"


class Params(PluginParams):
    prefillScale: float = Field(1.0, ge=0)
    decodeScale: float = Field(1.0, ge=0)
    waitingPenalty: float = Field(8.0, ge=0)
    blockSizeTokens: int = Field(16, ge=1)


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
class CostModelScorer:
    name: str
    params: Params
    kv_index: KVIndexView | None
    approx: PrefixCacheScorer
    owns_approx: bool = True
    type_name: str = TYPE

    def bind(self, plugins: Mapping[str, Plugin]) -> None:
        shared = [p for p in plugins.values() if isinstance(p, PrefixCacheScorer)]
        if shared:
            self.approx, self.owns_approx = shared[0], False

    def _match(self, req: SchedRequest, candidates: list[Endpoint]) -> PrefixMatch:
        if self.kv_index is not None:
            m = precise_prefix_match(req, self.kv_index, candidates, self.params.blockSizeTokens)
            if m is not None:
                return m
        return self.approx.match_for(req, candidates)

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        p = self.params
        m = self._match(req, candidates)
        bs = float(m.block_size_tokens or p.blockSizeTokens)
        prompt = float(req.num_prompt_tokens_estimate)
        costs = {}
        for e in candidates:
            ld = e.load
            prefill_q, kv = ld.in_flight_prefill_tokens, ld.in_flight_kv_tokens
            if prefill_q == 0 and kv == 0 and ld.in_flight_requests > 0:
                prefill_q = kv = int(prompt * ld.in_flight_requests)
            uncached = max(0.0, prompt - m.cached_tokens(e.id))
            costs[e.id] = (
                p.prefillScale * (uncached + prefill_q) / bs
                + p.decodeScale * kv / bs
                + p.waitingPenalty * e.metrics.num_waiting
            )
        return inverse_minmax(costs)

    def pre_request(self, req: SchedRequest, result: SchedulingResult) -> None:
        if self.owns_approx:
            self.approx.pre_request(req, result)

    def endpoint_removed(self, endpoint_id: str) -> None:
        if self.owns_approx:
            self.approx.endpoint_removed(endpoint_id)


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> CostModelScorer:
    p = parse_params(Params, TYPE, name, params)
    approx = PrefixCacheScorer(name=f"{name}/approx", index=ApproxPrefixIndex())
    return CostModelScorer(name=name, params=p, kv_index=services.kv_index, approx=approx)
