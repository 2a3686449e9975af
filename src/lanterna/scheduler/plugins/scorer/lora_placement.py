"""LoRA placement scorer, type ``lanterna-lora-placement-scorer`` (Lanterna's own; llm-d has ``lora-affinity-scorer``).

Keeps each adapter on a bounded set of replicas that grows with the adapter's share of the load, so a hot
adapter is spread over a few replicas instead of all of them (no thundering herd of loads) and a cold one
stays where it is resident. For a request naming adapter ``a`` over candidates E:

    active(e) = a's peers in use on e: scraped running + waiting adapters, plus the adapters the gateway
                has in flight there (``Endpoint.load.in_flight_adapters``: instant, the scrape lags)
    cap(e)    = scraped ``max_lora``, else ``maxLoras`` (0 = no limit)
    free(e)   = cap(e) - |active(e) - {a}|      (slots a request for a could run in without waiting)
    empty(e)  = cap(e) - |(active(e) + resident(e)) - {a}|   (free slots whose load would evict nobody)
    k(a)      = clamp(ceil(spread x |E| x (n_a + 1) / (N + |E|)), 1, maxReplicas or |E|)
                n_a: a's requests in flight in the pool, N: all requests in flight: the adapter's share of the
                load (the |E| in the denominator is a prior of one request per replica, so an idle pool
                starts every adapter on one replica instead of all of them)
    placed(a) = #{e : a in active(e)}

    score(e) = 1.0                            a in active(e) (running or on its way there)
             = 0.6                            a only waits on e, behind max_lora other running adapters
             = 0.1 if a resident on e else 0  free(e) <= 0 (every slot busy with other adapters: the request
                                              waits; where a is resident it then needs no load)
    placed(a) < k(a), growing:
             = 0.9                            a resident on e (idle in a GPU slot: no load needed)
             = 0.5 + 0.3 x empty(e) / cap(e)  else onto the emptiest replica
    placed(a) >= k(a), at the bound (used only when the replicas running a cannot take it):
             = 0.3                            a resident on e
             = 0.2 x free(e) / cap(e)         else

``resident(e)`` is the gateway's mirror of e's slot LRU: the last cap(e) distinct adapters this scorer sent
there (vLLM keeps that many adapters in GPU slots and evicts the least recently used). Requests without an
adapter score 1.0 everywhere. Pre-request: the picked endpoint's mirror gets ``a`` as most recent.
Params: ``spread`` (1.0), ``maxReplicas`` (0: |E|), ``maxLoras`` (0). Memory: endpoints x cap adapters.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest, SchedulingResult

TYPE = "lanterna-lora-placement-scorer"
UNKNOWN_CAP_RESIDENT = 64  # mirror size per endpoint when max_lora is unknown (bounds memory)


class Params(PluginParams):
    spread: float = Field(1.0, gt=0)
    maxReplicas: int = Field(0, ge=0)
    maxLoras: int = Field(0, ge=0)


@dataclass(slots=True)
class LoraPlacementScorer:
    name: str
    params: Params
    type_name: str = TYPE
    _resident: dict[str, OrderedDict[str, None]] = field(default_factory=dict)  # endpoint -> LRU, oldest first

    def _cap(self, e: Endpoint) -> int:
        return e.metrics.max_lora or self.params.maxLoras

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        a = req.lora
        if not a:
            return dict.fromkeys([e.id for e in candidates], 1.0)
        n_a = total = placed = 0
        for e in candidates:
            inflight = e.load.in_flight_adapters
            n_a += inflight.get(a, 0)
            total += e.load.in_flight_requests
            m = e.metrics
            placed += a in inflight or a in m.running_lora_adapters or a in m.waiting_lora_adapters
        num = len(candidates)
        limit = min(num, self.params.maxReplicas or num)
        k = min(limit, max(1, math.ceil(self.params.spread * num * (n_a + 1) / (total + num))))
        grow = placed < k
        out: dict[str, float] = {}
        for e in candidates:
            m, inflight = e.metrics, e.load.in_flight_adapters
            running, waiting = m.running_lora_adapters, m.waiting_lora_adapters
            cap = self._cap(e)
            if a in inflight or a in running:
                out[e.id] = 1.0
                continue
            if a in waiting:  # waiting there and not running: blocked if max_lora others run
                out[e.id] = 0.6 if cap and len(running) >= cap else 1.0
                continue
            if not cap:  # no limit known: any replica can load it
                is_res = a in self._resident.get(e.id, ())
                out[e.id] = (0.9 if is_res else 0.8) if grow else (0.3 if is_res else 0.2)
                continue
            active = running | waiting | inflight.keys()
            free = cap - len(active)
            resident = self._resident.get(e.id)
            if free <= 0:
                out[e.id] = 0.1 if resident is not None and a in resident else 0.0
                continue
            if resident is not None and a in resident:
                out[e.id] = 0.9 if grow else 0.3
            elif grow:
                empty = max(0, cap - len(active | resident.keys()) if resident is not None else free)
                out[e.id] = 0.5 + 0.3 * empty / cap
            else:
                out[e.id] = 0.2 * free / cap
        return out

    def pre_request(self, req: SchedRequest, result: SchedulingResult) -> None:
        a = req.lora
        if not a:
            return
        for res in result.profile_results.values():
            e = res.primary
            if e is None:
                continue
            lru = self._resident.get(e.id)
            if lru is None:
                lru = self._resident[e.id] = OrderedDict()
            lru[a] = None
            lru.move_to_end(a)
            cap = self._cap(e) or UNKNOWN_CAP_RESIDENT
            while len(lru) > cap:
                lru.popitem(last=False)

    def endpoint_removed(self, endpoint_id: str) -> None:
        self._resident.pop(endpoint_id, None)


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> LoraPlacementScorer:
    return LoraPlacementScorer(name=name, params=parse_params(Params, TYPE, name, params))
