"""Token-load scorer, type ``token-load-scorer`` (llm-d formula, gateway-side counts).

t = in-flight tokens on the endpoint = max(``load.in_flight_kv_tokens``, ``load.in_flight_prefill_tokens``)
(KV tokens include the prompt; prefill tokens are the not-yet-prefilled part); score = 1 - min(1, t /
maxTokens). Params: ``maxTokens`` (default 4194304)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest

TYPE = "token-load-scorer"
DEFAULT_MAX_TOKENS = 4_194_304


class Params(PluginParams):
    maxTokens: int = Field(DEFAULT_MAX_TOKENS, ge=1)


@dataclass(slots=True)
class TokenLoadScorer:
    name: str
    max_tokens: int = DEFAULT_MAX_TOKENS
    type_name: str = TYPE

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        m = self.max_tokens
        out = {}
        for e in candidates:
            t = max(e.load.in_flight_kv_tokens, e.load.in_flight_prefill_tokens)
            out[e.id] = 1.0 - min(1.0, t / m)
        return out


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> TokenLoadScorer:
    return TokenLoadScorer(name=name, max_tokens=parse_params(Params, TYPE, name, params).maxTokens)
