"""Round-robin picker, type ``round-robin`` (Lanterna baseline; ignores scores).

Cycles through the candidates ordered by endpoint id, so the order is stable while endpoints come and
go. Params: ``maxNumOfEndpoints`` (default 4): the next endpoints in the cycle are the fallbacks."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest

TYPE = "round-robin"


class Params(PluginParams):
    maxNumOfEndpoints: int = Field(4, ge=1)


@dataclass(slots=True)
class RoundRobinPicker:
    name: str
    max_endpoints: int = 4
    next_index: int = 0
    type_name: str = TYPE

    def pick(
        self, req: SchedRequest, scores: dict[str, float], candidates: list[Endpoint], rng: random.Random
    ) -> list[Endpoint]:
        ordered = sorted(candidates, key=lambda e: e.id)
        n = len(ordered)
        start = self.next_index % n
        self.next_index = (start + 1) % n  # NOTE: bounded counter
        return [ordered[(start + i) % n] for i in range(min(self.max_endpoints, n))]


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> RoundRobinPicker:
    return RoundRobinPicker(name=name, max_endpoints=parse_params(Params, TYPE, name, params).maxNumOfEndpoints)
