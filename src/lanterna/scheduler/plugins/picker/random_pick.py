"""Random picker, type ``random-picker``: uniform over the candidates, scores ignored (a baseline).

Params: ``maxNumOfEndpoints`` (default 4): that many distinct endpoints, in random order."""

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

TYPE = "random-picker"


class Params(PluginParams):
    maxNumOfEndpoints: int = Field(4, ge=1)


@dataclass(slots=True)
class RandomPicker:
    name: str
    max_endpoints: int = 4
    type_name: str = TYPE

    def pick(
        self, req: SchedRequest, scores: dict[str, float], candidates: list[Endpoint], rng: random.Random
    ) -> list[Endpoint]:
        return rng.sample(candidates, min(self.max_endpoints, len(candidates)))


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> RandomPicker:
    return RandomPicker(name=name, max_endpoints=parse_params(Params, TYPE, name, params).maxNumOfEndpoints)
