"""Plugin kinds (``typing.Protocol``s) and the shared services a plugin may use.

Calling protocol, once per request (``Scheduler.schedule``):

1. every ``DataProducer`` plugin: ``produce(req, candidates)`` (fills ``req.state``, e.g. prefix matches);
2. the ``ProfileHandler``: ``pick(req, profiles, results)`` repeatedly until it returns no profile; each
   picked profile runs ``Filter.filter`` in order -> ``Scorer.score`` (the framework clamps each score to
   [0,1], multiplies by the profile weight, sums; no normalisation) -> ``Picker.pick``;
3. ``ProfileHandler.process_results`` builds the ``SchedulingResult`` (raises ``NoCapacity`` if unusable).

After the caller commits to the pick: every ``PreRequest`` plugin's ``pre_request(req, result)``; when the
response ends: every ``ResponseComplete`` plugin's ``response_complete(req, result, endpoint_id, cached)``.
A plugin that wants to see its sibling plugins (e.g. a P/D handler finding its decider) implements
``Binder.bind(plugins)``, called once after every plugin of a config has been built.

A plugin may implement several kinds (``context-length-aware`` is a filter and a scorer). Plugins are pure:
no I/O, no ``time.*``, no global ``random``; randomness comes from the ``rng`` the framework passes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from lanterna.clock import Clock
from lanterna.endpoints.types import Endpoint

if TYPE_CHECKING:
    from lanterna.scheduler.framework.profile import SchedulerProfile
    from lanterna.scheduler.framework.types import ProfileResult, SchedRequest, SchedulingResult


class KVIndexView(Protocol):
    """Read side of the precise (KV-event) prefix index, implemented in ``lanterna.kvindex``."""

    def match(
        self, model: str, lora: str | None, token_ids: Sequence[int], endpoint_ids: Sequence[str]
    ) -> dict[str, float]:
        """Tier-weighted count of consecutive matched blocks from the first block, per endpoint."""
        ...

    def block_size_for(self, model: str) -> int | None:
        """The model servers' KV block size in tokens, once known."""
        ...


@dataclass(frozen=True, slots=True)
class SchedulerServices:
    """Optional shared services handed to every plugin factory. ``clock`` is filled by the Scheduler."""

    kv_index: KVIndexView | None = None
    clock: Clock | None = None


@runtime_checkable
class Plugin(Protocol):
    """Every plugin has an instance name (from the config; defaults to its type) and its type name."""

    name: str
    type_name: str


@runtime_checkable
class Filter(Protocol):
    def filter(self, req: SchedRequest, candidates: list[Endpoint]) -> list[Endpoint]:
        """Return the subset (in order) that may serve ``req``; an empty list ends the profile."""
        ...


@runtime_checkable
class Scorer(Protocol):
    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        """Score per endpoint id; missing ids score 0; the framework clamps to [0,1]."""
        ...


@runtime_checkable
class Picker(Protocol):
    def pick(
        self, req: SchedRequest, scores: dict[str, float], candidates: list[Endpoint], rng: random.Random
    ) -> list[Endpoint]:
        """Targets best first (primary + fallbacks) from the weighted totals; never empty."""
        ...


@runtime_checkable
class ProfileHandler(Protocol):
    def pick(
        self,
        req: SchedRequest,
        profiles: Mapping[str, SchedulerProfile],
        results: Mapping[str, ProfileResult | None],
    ) -> list[str]:
        """Names of the profiles to run next (not yet in ``results``); ``[]`` ends the cycle."""
        ...

    def process_results(
        self, req: SchedRequest, results: Mapping[str, ProfileResult | None]
    ) -> SchedulingResult:
        """Turn profile outcomes (None = its filters left no candidate) into the final result."""
        ...


@runtime_checkable
class DataProducer(Protocol):
    def produce(self, req: SchedRequest, candidates: list[Endpoint]) -> None:
        """Compute per-request data into ``req.state`` once, before any profile runs."""
        ...


@runtime_checkable
class PreRequest(Protocol):
    def pre_request(self, req: SchedRequest, result: SchedulingResult) -> None:
        """The caller committed to ``result``: update indexes and bookkeeping."""
        ...


@runtime_checkable
class ResponseComplete(Protocol):
    def response_complete(
        self, req: SchedRequest, result: SchedulingResult, endpoint_id: str, num_cached_tokens: int | None
    ) -> None:
        """The response from ``endpoint_id`` ended; ``num_cached_tokens`` from usage when reported."""
        ...


@runtime_checkable
class Binder(Protocol):
    def bind(self, plugins: Mapping[str, Plugin]) -> None:
        """See the other plugins of the same config (by instance name) once all are built."""
        ...
