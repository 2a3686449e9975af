"""One scheduling profile: filters in order -> weighted scorers -> picker (llm-d's contract).

The framework, not the plugin, clamps every score to [0,1] and applies the weight: a buggy scorer cannot
dominate the sum, and weights in the YAML mean the same thing for every plugin. Totals are not normalised
(llm-d does not), so a profile's totals range over [0, sum of weights].
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import Filter, Picker, Scorer
from lanterna.scheduler.framework.types import ProfileResult, SchedRequest


@dataclass(frozen=True, slots=True)
class WeightedScorer:
    scorer: Scorer
    weight: float


@dataclass(slots=True)
class SchedulerProfile:
    name: str
    filters: list[Filter] = field(default_factory=list)
    scorers: list[WeightedScorer] = field(default_factory=list)
    picker: Picker | None = None

    def run(self, req: SchedRequest, candidates: list[Endpoint], rng: random.Random) -> ProfileResult | None:
        """Targets best first, or None when the filters leave no candidate."""
        cands = candidates
        for f in self.filters:
            cands = f.filter(req, cands)
            if not cands:
                return None
        totals = dict.fromkeys([e.id for e in cands], 0.0)
        for ws in self.scorers:
            w = ws.weight
            if w == 0.0:
                continue
            scores = ws.scorer.score(req, cands)
            for eid, s in scores.items():
                if eid in totals:
                    # NOTE: clamp to [0,1]; NaN counts as 0 so it never wins a max.
                    totals[eid] += w * (1.0 if s >= 1.0 else s if s > 0.0 else 0.0)
        assert self.picker is not None, "profile built without a picker"
        targets = self.picker.pick(req, totals, cands, rng)
        return ProfileResult(targets=targets, scores=totals)

    def plugin_names(self) -> list[str]:
        names = [getattr(f, "name", "?") for f in self.filters]
        names += [f"{getattr(ws.scorer, 'name', '?')}x{ws.weight:g}" for ws in self.scorers]
        names.append(getattr(self.picker, "name", "?"))
        return names
