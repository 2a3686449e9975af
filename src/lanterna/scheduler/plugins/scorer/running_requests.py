"""Running-requests scorer, type ``running-requests-size-scorer`` (llm-d).

score = (r_max - r) / (r_max - r_min) over the candidates, r = scraped ``vllm:num_requests_running``;
all equal -> 1.0. No parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest
from lanterna.scheduler.plugins.scorer._norm import inverse_minmax

TYPE = "running-requests-size-scorer"


class Params(PluginParams):
    pass


@dataclass(slots=True)
class RunningRequestsScorer:
    name: str
    type_name: str = TYPE

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        return inverse_minmax({e.id: float(e.metrics.num_running) for e in candidates})


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> RunningRequestsScorer:
    parse_params(Params, TYPE, name, params)
    return RunningRequestsScorer(name=name)
