"""Weighted-random picker, type ``weighted-random-picker``.

P(primary = e) = score(e) / sum(scores). Sampling without replacement for the fallbacks uses the
Efraimidis-Spirakis keys u^(1/w) (largest first). Zero-score endpoints come last; all-zero scores fall
back to uniform. Params: ``maxNumOfEndpoints`` (default 4)."""

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

TYPE = "weighted-random-picker"


class Params(PluginParams):
    maxNumOfEndpoints: int = Field(4, ge=1)


@dataclass(slots=True)
class WeightedRandomPicker:
    name: str
    max_endpoints: int = 4
    type_name: str = TYPE

    def pick(
        self, req: SchedRequest, scores: dict[str, float], candidates: list[Endpoint], rng: random.Random
    ) -> list[Endpoint]:
        keyed = []
        for e in candidates:
            w = scores.get(e.id, 0.0)
            u = rng.random()
            # zero weights sort after every positive one (key in (-1, 0]), uniformly among themselves
            keyed.append((u ** (1.0 / w) if w > 0 else u - 1.0, e))
        keyed.sort(key=lambda kv: kv[0], reverse=True)
        return [e for _, e in keyed[: self.max_endpoints]]


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> WeightedRandomPicker:
    return WeightedRandomPicker(name=name, max_endpoints=parse_params(Params, TYPE, name, params).maxNumOfEndpoints)
