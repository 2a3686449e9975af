"""EndpointStore: candidates per model (cached, invalidated on change) and the model union."""

from __future__ import annotations

from lanterna.endpoints.store import EndpointStore, ModelCard
from lanterna.endpoints.types import Endpoint


def test_candidates_follow_models_and_health() -> None:
    a, b = Endpoint("a", "a:1"), Endpoint("b", "b:1")
    s = EndpointStore([a, b])
    s.set_models(a, [ModelCard("base"), ModelCard("lora", parent="base")])
    s.set_models(b, [ModelCard("other")])
    assert s.candidates("lora") == [a] and s.candidates("other") == [b]
    assert s.candidates("missing") == []
    s.set_healthy(a, False)
    assert s.candidates("lora") == [] and s.known_models() == ["other"]
    s.set_healthy(a, True)
    assert s.known_models() == ["base", "lora", "other"]
    assert s.base_model_of("lora") == "base" and s.base_model_of("base") is None
    s.remove("a")
    assert s.candidates("base") == []


def test_candidate_cache_is_bounded() -> None:
    s = EndpointStore([Endpoint("a", "a:1", models=frozenset({"m"}))])
    for i in range(5000):
        s.candidates(f"unknown-{i}")
    assert len(s._cache) <= 1025
