"""EndpointStore: the set of known model servers and what they serve (pure: no I/O, no clock).

Discovery (static config, the launcher, Kubernetes) adds and removes endpoints; scrapers and health
checks mutate the ``Endpoint`` objects in place. ``candidates(model)`` is the hot path: per-model lists
are cached and rebuilt only when membership, health or served models change (``version`` bumps).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lanterna.endpoints.types import Endpoint, EndpointId


@dataclass(frozen=True, slots=True)
class ModelCard:
    """One entry of ``GET /v1/models``: a base model (parent None) or a LoRA adapter of ``parent``."""

    id: str
    parent: str | None = None
    max_model_len: int | None = None
    owned_by: str = "vllm"


class EndpointStore:
    __slots__ = ("_endpoints", "_cards", "_cache", "_parents", "version")

    def __init__(self, endpoints: Iterable[Endpoint] = ()) -> None:
        self._endpoints: dict[EndpointId, Endpoint] = {}
        self._cards: dict[EndpointId, tuple[ModelCard, ...]] = {}
        self._cache: dict[str, list[Endpoint]] = {}
        self._parents: dict[str, str | None] | None = None  # model id -> parent; rebuilt after a change
        self.version = 0
        for ep in endpoints:
            self.add(ep)

    def _changed(self) -> None:
        self.version += 1
        self._cache.clear()
        self._parents = None

    def add(self, ep: Endpoint) -> None:
        self._endpoints[ep.id] = ep
        self._changed()

    def remove(self, endpoint_id: EndpointId) -> Endpoint | None:
        ep = self._endpoints.pop(endpoint_id, None)
        self._cards.pop(endpoint_id, None)
        if ep is not None:
            self._changed()
        return ep

    def get(self, endpoint_id: EndpointId) -> Endpoint | None:
        return self._endpoints.get(endpoint_id)

    def all(self) -> list[Endpoint]:
        return list(self._endpoints.values())

    def __len__(self) -> int:
        return len(self._endpoints)

    def set_healthy(self, ep: Endpoint, healthy: bool) -> None:
        if ep.healthy != healthy:
            ep.healthy = healthy
            self._changed()

    def set_models(self, ep: Endpoint, cards: Iterable[ModelCard]) -> None:
        """Record what ``ep`` serves (from its ``/v1/models``): base models and LoRA adapters alike."""
        cards = tuple(cards)
        names = frozenset(c.id for c in cards)
        if names != ep.models or self._cards.get(ep.id) != cards:
            ep.models = names
            self._cards[ep.id] = cards
            self._changed()

    def candidates(self, model: str) -> list[Endpoint]:
        """Healthy endpoints serving ``model`` (a base model or a LoRA adapter). Callers must not mutate."""
        hit = self._cache.get(model)
        if hit is None:
            hit = [e for e in self._endpoints.values() if e.healthy and e.serves(model)]
            if len(self._cache) > 1024:  # bounded: unknown model names must not grow the cache
                self._cache.clear()
            self._cache[model] = hit
        return hit

    def model_cards(self) -> list[ModelCard]:
        """Union of healthy endpoints' models, first seen wins, sorted by id."""
        seen: dict[str, ModelCard] = {}
        for ep_id, cards in self._cards.items():
            ep = self._endpoints.get(ep_id)
            if ep is None or not ep.healthy:
                continue
            for c in cards:
                seen.setdefault(c.id, c)
        for ep in self._endpoints.values():  # statically declared models without a /v1/models answer yet
            if ep.healthy and ep.id not in self._cards:
                for name in ep.models:
                    seen.setdefault(name, ModelCard(name))
        return [seen[k] for k in sorted(seen)]

    def known_models(self) -> list[str]:
        return [c.id for c in self.model_cards()]

    def base_model_of(self, name: str) -> str | None:
        """The parent of a LoRA adapter (None for base models and unknown names)."""
        parents = self._parents
        if parents is None:  # bounded by the served model cards
            parents = self._parents = {}
            for cards in self._cards.values():
                for c in cards:
                    parents.setdefault(c.id, c.parent)
        return parents.get(name)
