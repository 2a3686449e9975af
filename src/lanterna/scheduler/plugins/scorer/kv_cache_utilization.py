"""KV-cache utilization scorer, type ``kv-cache-utilization-scorer`` (llm-d).

score = 1 - kv, kv = scraped ``vllm:kv_cache_usage_perc`` in [0,1] (out-of-range values are clamped by
the framework). No parameters. Prefers replicas with free KV blocks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest

TYPE = "kv-cache-utilization-scorer"


class Params(PluginParams):
    pass


@dataclass(slots=True)
class KVCacheUtilizationScorer:
    name: str
    type_name: str = TYPE

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        return {e.id: 1.0 - e.metrics.kv_cache_usage for e in candidates}


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> KVCacheUtilizationScorer:
    parse_params(Params, TYPE, name, params)
    return KVCacheUtilizationScorer(name=name)
