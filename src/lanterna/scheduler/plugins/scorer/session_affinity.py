"""Session-affinity scorer, type ``session-affinity-scorer`` (llm-d).

score = 1 for the endpoint named by the request's ``x-session-token`` (raw endpoint id or its URL-safe
base64, which is what the gateway returns to the client via ``session_token_for``), 0 for the rest;
all 0 without a token. No parameters."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest

TYPE = "session-affinity-scorer"
SESSION_HEADER = "x-session-token"


class Params(PluginParams):
    pass


def session_token_for(endpoint_id: str) -> str:
    """The opaque token the gateway returns in ``x-session-token`` for a response served by ``endpoint_id``."""
    return base64.urlsafe_b64encode(endpoint_id.encode()).decode()


def _decode(token: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


@dataclass(slots=True)
class SessionAffinityScorer:
    name: str
    type_name: str = TYPE

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        token = req.session_token or req.headers.get(SESSION_HEADER)
        out = dict.fromkeys([e.id for e in candidates], 0.0)
        if not token:
            return out
        if token in out:
            out[token] = 1.0
        else:
            eid = _decode(token)
            if eid is not None and eid in out:
                out[eid] = 1.0
        return out


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> SessionAffinityScorer:
    parse_params(Params, TYPE, name, params)
    return SessionAffinityScorer(name=name)
