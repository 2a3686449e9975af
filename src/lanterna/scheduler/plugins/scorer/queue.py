"""Queue-depth scorer, type ``queue-scorer`` (llm-d).

score = (q_max - q) / (q_max - q_min) over the candidates, q = scraped ``vllm:num_requests_waiting``;
all-equal queues score 1.0. No parameters. Steers away from backlogs (stale between scrapes)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest
from lanterna.scheduler.plugins.scorer._norm import inverse_minmax

TYPE = "queue-scorer"


class Params(PluginParams):
    pass


@dataclass(slots=True)
class QueueScorer:
    name: str
    type_name: str = TYPE

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        return inverse_minmax({e.id: float(e.metrics.num_waiting) for e in candidates})


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> QueueScorer:
    parse_params(Params, TYPE, name, params)
    return QueueScorer(name=name)
