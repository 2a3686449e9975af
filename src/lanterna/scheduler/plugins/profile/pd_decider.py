"""Prefix-based P/D decider, type ``prefix-based-pd-decider``.

Disaggregate (run the prefill profile) when the decode endpoint picked would still have to compute
``uncached = prompt_tokens - cached_tokens(decode endpoint) >= nonCachedTokens`` tokens (and > 0).
Cached tokens come from the cycle's prefix match (precise index first, else the approximate one); with
neither, the whole prompt counts as uncached. Params: ``nonCachedTokens`` (default 0: any uncached
token triggers P/D)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import (
    STATE_PREFIX_APPROX,
    STATE_PREFIX_PRECISE,
    PrefixMatch,
    SchedRequest,
)

TYPE = "prefix-based-pd-decider"


class Params(PluginParams):
    nonCachedTokens: int = Field(0, ge=0)


def cached_tokens(req: SchedRequest, endpoint_id: str) -> float:
    for key in (STATE_PREFIX_PRECISE, STATE_PREFIX_APPROX):
        m = req.state.get(key)
        if isinstance(m, PrefixMatch):
            return m.cached_tokens(endpoint_id)
    return 0.0


@dataclass(slots=True)
class PrefixBasedPDDecider:
    name: str
    non_cached_tokens: int = 0
    type_name: str = TYPE

    def disaggregate(self, req: SchedRequest, decode: Endpoint) -> bool:
        uncached = req.num_prompt_tokens_estimate - cached_tokens(req, decode.id)
        return uncached > 0 and uncached >= self.non_cached_tokens


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> PrefixBasedPDDecider:
    return PrefixBasedPDDecider(name=name, non_cached_tokens=parse_params(Params, TYPE, name, params).nonCachedTokens)
