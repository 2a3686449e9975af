"""Seeded failure injection for the simulator: exercise gateway retries, breakers and health checks.

Each request draws once: with probability ``rate`` it gets one of the enabled failure types, chosen
uniformly. ``dead`` is sticky: the server then answers ``/health`` and every request with 503 until
restarted, like a wedged vLLM.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

FAILURE_TYPES = ("http_500", "http_429", "http_503", "connection_drop", "connection_drop_mid", "stall", "dead")


def parse_failure_types(text: str) -> tuple[str, ...]:
    """``"http_500,stall"`` -> a tuple, rejecting unknown names with the list of known ones."""
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [n for n in names if n not in FAILURE_TYPES]
    if unknown:
        raise ValueError(f"unknown failure type(s) {', '.join(unknown)}; known: {', '.join(FAILURE_TYPES)}")
    return names


@dataclass(slots=True)
class FailureInjector:
    rate: float = 0.0
    types: tuple[str, ...] = ("http_500",)
    seed: int = 0
    stall_s: float = 30.0
    dead: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"failure rate must be in [0, 1], got {self.rate}")
        self._rng = random.Random(self.seed)

    def draw(self) -> str | None:
        """The failure for the next request, or None. Never draws when disabled (keeps runs reproducible)."""
        if self.dead:
            return "dead"
        if self.rate <= 0.0 or not self.types or self._rng.random() >= self.rate:
            return None
        kind = self.types[self._rng.randrange(len(self.types))]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "dead":
            self.dead = True
        return kind
