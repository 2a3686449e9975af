"""LoRA-affinity scorer, type ``lora-affinity-scorer`` (llm-d / GAIE).

For a request naming adapter a (``req.lora``), from scraped ``vllm:lora_requests_info``: 1.0 when a is
running on the endpoint, else 0.8 when it has room to load one (running adapters < max_lora), else 0.6
when a is waiting there, else 0. Requests without an adapter score 1.0 everywhere. No parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest

TYPE = "lora-affinity-scorer"


class Params(PluginParams):
    pass


@dataclass(slots=True)
class LoraAffinityScorer:
    name: str
    type_name: str = TYPE

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        a = req.lora
        if not a:
            return dict.fromkeys([e.id for e in candidates], 1.0)
        out = {}
        for e in candidates:
            m = e.metrics
            if a in m.running_lora_adapters:
                s = 1.0
            elif len(m.running_lora_adapters) < m.max_lora:
                s = 0.8
            elif a in m.waiting_lora_adapters:
                s = 0.6
            else:
                s = 0.0
            out[e.id] = s
        return out


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> LoraAffinityScorer:
    parse_params(Params, TYPE, name, params)
    return LoraAffinityScorer(name=name)
