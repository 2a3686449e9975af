"""Context-length-aware filter and scorer, type ``context-length-aware``.

Endpoints carry a label (default ``llm-d.ai/context-length-range``) of ranges ``"min-max"``, comma-separated
(e.g. ``"0-4096,8192-32768"``). The request length is the prompt estimate plus ``max_tokens`` (when set).
Score: in range 0.5 + 0.5 x length/max of the matching range (the tightest fit wins, keeping big-context
replicas free for long requests), 0.5 for unlabelled endpoints (no claim either way), 0.0 out of range or
unparsable. Filter (``enableFiltering``, default true): drop
endpoints out of range; unlabelled endpoints stay. Params: ``label``, ``enableFiltering``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest

TYPE = "context-length-aware"
DEFAULT_LABEL = "llm-d.ai/context-length-range"


class Params(PluginParams):
    label: str = DEFAULT_LABEL
    enableFiltering: bool = True


def parse_ranges(text: str) -> list[tuple[int, int]] | None:
    """``"0-4096,8192-32768"`` -> [(0, 4096), (8192, 32768)]; None when malformed."""
    out = []
    try:
        for part in text.split(","):
            lo, hi = part.strip().split("-", 1)
            a, b = int(lo), int(hi)
            if a < 0 or b < a:
                return None
            out.append((a, b))
    except ValueError:
        return None
    return out


@dataclass(slots=True)
class ContextLengthAware:
    name: str
    label: str = DEFAULT_LABEL
    filtering: bool = True
    type_name: str = TYPE
    _cache: dict[str, list[tuple[int, int]] | None] = field(default_factory=dict)

    def _fit(self, e: Endpoint, length: int) -> float | None:
        """None: unlabelled; 0: out of range; else (0.5, 1]: tighter fit scores higher."""
        text = e.labels.get(self.label)
        if text is None:
            return None
        ranges = self._cache.get(text)
        if ranges is None and text not in self._cache:
            if len(self._cache) > 1024:  # NOTE: bounded; label values are few in practice
                self._cache.clear()
            ranges = self._cache[text] = parse_ranges(text)
        best = 0.0
        for lo, hi in ranges or ():
            if lo <= length <= hi:
                best = max(best, 0.5 + 0.5 * (length / hi if hi else 1.0))
        return best

    @staticmethod
    def _length(req: SchedRequest) -> int:
        return req.num_prompt_tokens_estimate + (req.max_tokens or 0)

    def filter(self, req: SchedRequest, candidates: list[Endpoint]) -> list[Endpoint]:
        if not self.filtering:
            return candidates
        n = self._length(req)
        return [e for e in candidates if (f := self._fit(e, n)) is None or f > 0]

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        n = self._length(req)
        out = {}
        for e in candidates:
            f = self._fit(e, n)
            out[e.id] = 0.5 if f is None else f
        return out


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> ContextLengthAware:
    p = parse_params(Params, TYPE, name, params)
    return ContextLengthAware(name=name, label=p.label, filtering=p.enableFiltering)
