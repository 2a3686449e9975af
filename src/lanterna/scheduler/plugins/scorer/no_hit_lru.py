"""No-hit LRU scorer, type ``no-hit-lru-scorer`` (llm-d).

Spreads cold requests (no prefix hit anywhere) so new prefixes seed different replicas. If any candidate
has a prefix hit (from the cycle's ``PrefixMatch``, precise first, else approximate; a prefix still in
flight, from ``cost-model-scorer``, counts too) every candidate
scores 0.5 (neutral; the prefix scorer decides). Otherwise candidates are ranked: never-used endpoints
first (in candidate order), then least recently used first; score = 1 - rank / (n - 1) (n = 1: 1.0).
Pre-request: a cold request's picked endpoint becomes most recently used. Params: ``lruSize`` (1024)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import (
    STATE_PREFIX_APPROX,
    STATE_PREFIX_PRECISE,
    PrefixMatch,
    SchedRequest,
    SchedulingResult,
)
from lanterna.scheduler.plugins.scorer.pending import STATE_PREFIX_PENDING

TYPE = "no-hit-lru-scorer"
_COLD = "lanterna/no-hit-lru/cold"


class Params(PluginParams):
    lruSize: int = Field(1024, ge=1)


def _any_hit(req: SchedRequest) -> bool:
    pending = req.state.get(STATE_PREFIX_PENDING)
    if isinstance(pending, PrefixMatch) and pending.any_hit:
        return True
    for key in (STATE_PREFIX_PRECISE, STATE_PREFIX_APPROX):
        m = req.state.get(key)
        if isinstance(m, PrefixMatch):
            return m.any_hit
    return False


@dataclass(slots=True)
class NoHitLRUScorer:
    name: str
    lru_size: int = 1024
    type_name: str = TYPE
    _lru: OrderedDict[str, None] = field(default_factory=OrderedDict)  # oldest first

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        if _any_hit(req):
            req.state[_COLD] = False
            return dict.fromkeys([e.id for e in candidates], 0.5)
        req.state[_COLD] = True
        n = len(candidates)
        if n == 1:
            return {candidates[0].id: 1.0}
        ids = {e.id for e in candidates}
        ranked = [e.id for e in candidates if e.id not in self._lru]
        ranked += [k for k in self._lru if k in ids]
        return {k: 1.0 - r / (n - 1) for r, k in enumerate(ranked)}

    def pre_request(self, req: SchedRequest, result: SchedulingResult) -> None:
        cold = req.state.get(_COLD)  # set by score(); _any_hit only when this cycle did not score
        if not (cold if cold is not None else not _any_hit(req)):
            return
        for res in result.profile_results.values():
            if res.primary is not None:
                self._lru[res.primary.id] = None
                self._lru.move_to_end(res.primary.id)
        while len(self._lru) > self.lru_size:
            self._lru.popitem(last=False)

    def endpoint_removed(self, endpoint_id: str) -> None:
        self._lru.pop(endpoint_id, None)


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> NoHitLRUScorer:
    return NoHitLRUScorer(name=name, lru_size=parse_params(Params, TYPE, name, params).lruSize)
