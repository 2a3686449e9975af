"""Role filters, types ``prefill-filter`` and ``decode-filter`` (label ``llm-d.ai/role``).

``prefill-filter`` keeps role ``prefill``; ``decode-filter`` keeps ``decode`` and ``both``, and unlabelled
endpoints (which count as decode). No parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lanterna.endpoints.types import ROLE_BOTH, ROLE_DECODE, ROLE_LABEL, ROLE_PREFILL, Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest


class Params(PluginParams):
    pass


@dataclass(slots=True)
class RoleFilter:
    name: str
    type_name: str
    roles: frozenset[str]
    allow_unlabelled: bool

    def filter(self, req: SchedRequest, candidates: list[Endpoint]) -> list[Endpoint]:
        out = []
        for e in candidates:
            role = e.labels.get(ROLE_LABEL)
            if (role is None and self.allow_unlabelled) or role in self.roles:
                out.append(e)
        return out


@register("prefill-filter", params=Params)
def make_prefill(name: str, params: Mapping[str, Any], services: SchedulerServices) -> RoleFilter:
    parse_params(Params, "prefill-filter", name, params)
    return RoleFilter(name, "prefill-filter", frozenset({ROLE_PREFILL}), allow_unlabelled=False)


@register("decode-filter", params=Params)
def make_decode(name: str, params: Mapping[str, Any], services: SchedulerServices) -> RoleFilter:
    parse_params(Params, "decode-filter", name, params)
    return RoleFilter(name, "decode-filter", frozenset({ROLE_DECODE, ROLE_BOTH}), allow_unlabelled=True)
