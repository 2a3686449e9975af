"""Active-request scorer, type ``active-request-scorer`` (llm-d formula, gateway-side counts).

n = ``Endpoint.load.in_flight_requests`` (the gateway's own accounting, updated at dispatch and at stream
end, so a burst is seen instantly rather than at the next scrape); score = 1.0 when n <= idleThreshold,
else (n_max - n) / n_max over the candidates. Params: ``idleThreshold`` (default 0); ``requestTimeout``
is accepted for llm-d compatibility (the gateway releases timed-out requests itself)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest

TYPE = "active-request-scorer"


class Params(PluginParams):
    idleThreshold: int = Field(0, ge=0)
    requestTimeout: str | float | None = None


@dataclass(slots=True)
class ActiveRequestScorer:
    name: str
    idle_threshold: int = 0
    type_name: str = TYPE

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        counts = {e.id: e.load.in_flight_requests for e in candidates}
        top = max(counts.values(), default=0)
        idle = self.idle_threshold
        return {k: 1.0 if n <= idle else (top - n) / top for k, n in counts.items()}


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> ActiveRequestScorer:
    return ActiveRequestScorer(name=name, idle_threshold=parse_params(Params, TYPE, name, params).idleThreshold)
