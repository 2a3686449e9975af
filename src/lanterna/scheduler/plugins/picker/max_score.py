"""Max-score picker, type ``max-score-picker``.

Primary = highest weighted total; ties broken uniformly with the seeded rng (so a fixed seed replays the
same decisions). Fallbacks follow by score. Params: ``maxNumOfEndpoints`` (default 4: primary + 3
fallbacks for the gateway's retries; llm-d's default of 1 gives the same primary)."""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest

TYPE = "max-score-picker"


class Params(PluginParams):
    maxNumOfEndpoints: int = Field(4, ge=1)


@dataclass(slots=True)
class MaxScorePicker:
    name: str
    max_endpoints: int = 4
    type_name: str = TYPE

    def pick(
        self, req: SchedRequest, scores: dict[str, float], candidates: list[Endpoint], rng: random.Random
    ) -> list[Endpoint]:
        best = max(scores[e.id] for e in candidates)
        top = [e for e in candidates if scores[e.id] == best]
        primary = top[0] if len(top) == 1 else top[rng.randrange(len(top))]
        if self.max_endpoints == 1:
            return [primary]
        rest = [e for e in candidates if e is not primary]
        fallbacks = heapq.nlargest(self.max_endpoints - 1, rest, key=lambda e: scores[e.id])
        return [primary, *fallbacks]


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> MaxScorePicker:
    p = parse_params(Params, TYPE, name, params)
    return MaxScorePicker(name=name, max_endpoints=p.maxNumOfEndpoints)
