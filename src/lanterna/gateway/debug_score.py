"""``POST /debug/score``: what the scheduler thinks of a request, per endpoint, without dispatching it.

Why: routing is a weighted sum of plugin scores, and precise prefix routing depends on an index fed by
events; to check a config, or that two gateway replicas hold equal indexes (active-active), an operator
needs the numbers, not just the pick. The body is a completions or chat request (``messages`` means chat);
``?model=M`` overrides its model. Nothing is dispatched and no plugin state changes: no ``pre_request``
hook runs, and the picker draws from a copy of the scheduler's random state, so later routing is the
same as if this call never happened.

Response: per profile the endpoints the filters kept, per endpoint each scorer's raw score, weight and
weighted contribution (clamped to [0, 1] first, as the framework does) plus the total, the profile's
targets best first; then the primary profile and the pick (and the prefill pick under P/D).
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
from aiohttp import web

from lanterna.endpoints.types import Endpoint
from lanterna.gateway.state import GATEWAY
from lanterna.routing import core
from lanterna.scheduler import Scheduler
from lanterna.scheduler.framework.types import ApiKind, SchedRequest


def _clamp(s: float) -> float:
    return 1.0 if s >= 1.0 else s if s > 0.0 else 0.0  # NaN -> 0, as the profile does


def _profile_breakdown(prof: Any, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, Any]:
    cands = candidates
    for f in prof.filters:
        cands = f.filter(req, cands)
        if not cands:
            break
    kept = {e.id for e in cands}
    per: dict[str, dict[str, Any]] = {e.id: {"scores": {}, "total": 0.0} for e in cands}
    for ws in prof.scorers if cands else ():
        name = getattr(ws.scorer, "name", type(ws.scorer).__name__)
        scores = ws.scorer.score(req, cands) if ws.weight != 0.0 else {}
        for eid, row in per.items():
            raw = scores.get(eid)
            weighted = ws.weight * _clamp(raw) if raw is not None else 0.0
            row["scores"][name] = {"raw": raw, "weight": ws.weight, "weighted": weighted}
            row["total"] += weighted
    return {"endpoints": per, "filtered_out": sorted(e.id for e in candidates if e.id not in kept)}


def explain(sched: Scheduler, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, Any]:
    """Schedule ``req`` on a copy of the random state and break every profile's totals down by scorer."""
    saved: random.Random = sched.rng
    probe = random.Random()
    probe.setstate(saved.getstate())
    sched.rng = probe  # NOTE: schedule() is synchronous, so no other request sees the swapped RNG
    try:
        result = sched.schedule(req, candidates)  # runs the data producers; fills req's shared state
    finally:
        sched.rng = saved
    profiles: dict[str, Any] = {}
    for name, pres in result.profile_results.items():
        prof = sched.profiles.get(name)
        out = _profile_breakdown(prof, req, candidates) if prof is not None else {"endpoints": {}}
        out["targets"] = [e.id for e in pres.targets]
        out["totals"] = pres.scores
        profiles[name] = out
    primary = result.profile_results.get(result.primary_profile)
    prefill = result.prefill()
    return {"profiles": profiles, "primary_profile": result.primary_profile,
            "pick": primary.primary.id if primary is not None and primary.primary is not None else None,
            "prefill": prefill.id if prefill is not None else None}


async def debug_score(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    body = await request.read()
    kind: ApiKind = "chat" if b'"messages"' in body else "completions"
    call = core.prepare(gw, request.headers, body, kind, model=request.query.get("model"))
    await core.tokenize(gw, call)
    sreq = call.sreq
    out = {"model": call.target, "kind": kind,
           "num_prompt_tokens": len(sreq.token_ids) if sreq.token_ids is not None else None,
           "candidates": [e.id for e in call.candidates], **explain(gw.scheduler, sreq, call.candidates)}
    return web.Response(body=msgspec.json.encode(out), content_type="application/json")
