"""Builders for scheduler tests: endpoints with metrics/load, requests, schedulers."""

from __future__ import annotations

import random
from typing import Any

from lanterna.clock import VirtualClock
from lanterna.endpoints.types import ROLE_LABEL, Endpoint, EndpointLoad, EndpointMetrics
from lanterna.scheduler import EppConfig, SchedRequest, Scheduler, SchedulerServices, load_epp_config
from lanterna.scheduler.framework import registry


def ep(eid: str, *, role: str | None = None, labels: dict[str, str] | None = None, inflight: int = 0,
       kv_tokens: int = 0, prefill_tokens: int = 0, **metrics: Any) -> Endpoint:
    lab = dict(labels or {})
    if role is not None:
        lab[ROLE_LABEL] = role
    return Endpoint(
        id=eid, address=eid, labels=lab, metrics=EndpointMetrics(**metrics),
        load=EndpointLoad(in_flight_requests=inflight, in_flight_kv_tokens=kv_tokens,
                          in_flight_prefill_tokens=prefill_tokens),
    )


def req(prompt: str = "", **kw: Any) -> SchedRequest:
    return SchedRequest(request_id=kw.pop("request_id", "r"), model=kw.pop("model", "m"), prompt_text=prompt, **kw)


def plugin(type_name: str, params: dict[str, Any] | None = None, services: SchedulerServices | None = None) -> Any:
    return registry.build(type_name, type_name, params or {}, services or SchedulerServices())


def scheduler(cfg: EppConfig | str, seed: int = 0, services: SchedulerServices | None = None) -> Scheduler:
    c = load_epp_config(cfg) if isinstance(cfg, str) else cfg
    return Scheduler.from_config(c, rng=random.Random(seed), clock=VirtualClock(), services=services)
