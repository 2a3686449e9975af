"""Load-aware scorer, type ``load-aware-scorer`` (llm-d).

q = scraped waiting requests; score = 0.5 if q == 0 else 0.5 x (1 - min(q, threshold) / threshold), so an
idle queue scores 0.5 and a queue at or over ``threshold`` scores 0. Params: ``threshold`` (default 128)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest

TYPE = "load-aware-scorer"


class Params(PluginParams):
    threshold: int = Field(128, ge=1)


@dataclass(slots=True)
class LoadAwareScorer:
    name: str
    threshold: int = 128
    type_name: str = TYPE

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        t = self.threshold
        out = {}
        for e in candidates:
            q = e.metrics.num_waiting
            out[e.id] = 0.5 if q <= 0 else 0.5 * (1.0 - min(q, t) / t)
        return out


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> LoadAwareScorer:
    return LoadAwareScorer(name=name, threshold=parse_params(Params, TYPE, name, params).threshold)
