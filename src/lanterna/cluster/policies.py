"""Named routing policies for the virtual cluster and the well-lit scenarios, as EndpointPickerConfigs.

Each name maps to an llm-d ``EndpointPickerConfig`` document, so a policy evaluated here is the exact
config the gateway would load; a path to a YAML file is loaded as is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lanterna.errors import ConfigError
from lanterna.scheduler import (
    EppConfig,
    default_epp_config,
    lanterna_recommended_config,
    load_epp_config,
    parse_epp_config,
)


def _single(plugins: list[tuple[str, float | None, dict[str, Any] | None]]) -> EppConfig:
    """One profile from ``(type, weight, parameters)`` triples (weight None = a picker)."""
    specs = [{"type": t, **({"parameters": p} if p else {})} for t, _, p in plugins]
    refs = [{"pluginRef": t} if w is None else {"pluginRef": t, "weight": w} for t, w, _ in plugins]
    doc = {"apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig", "plugins": specs,
           "schedulingProfiles": [{"name": "default", "plugins": refs}]}
    return parse_epp_config(doc)


def _precise() -> EppConfig:
    """llm-d's precise-prefix guide: precise prefix 3, KV utilisation 2, queue 2."""
    return _single([("precise-prefix-cache-scorer", 3, None), ("kv-cache-utilization-scorer", 2, None),
                    ("queue-scorer", 2, None), ("max-score-picker", None, None)])


def _precise_no_hit_lru() -> EppConfig:
    """Precise routing plus ``no-hit-lru-scorer``: cold prefixes go to the least recently used replica."""
    return _single([("precise-prefix-cache-scorer", 3, None), ("kv-cache-utilization-scorer", 2, None),
                    ("queue-scorer", 2, None), ("no-hit-lru-scorer", 2, None), ("max-score-picker", None, None)])


def _approximate_no_hit_lru() -> EppConfig:
    """llm-d's default weights plus ``no-hit-lru-scorer`` (the cold-prefix stability configuration)."""
    return _single([("queue-scorer", 2, None), ("kv-cache-utilization-scorer", 2, None),
                    ("prefix-cache-scorer", 3, None), ("no-hit-lru-scorer", 2, None), ("max-score-picker", None, None)])


def _llmd_lora() -> EppConfig:
    """llm-d's default weights plus its ``lora-affinity-scorer`` (weight 2, as queue and KV)."""
    return _single([("queue-scorer", 2, None), ("kv-cache-utilization-scorer", 2, None),
                    ("prefix-cache-scorer", 3, None), ("lora-affinity-scorer", 2, None), ("max-score-picker", None, None)])


def _lanterna_lora() -> EppConfig:
    """``lanterna`` plus ``lanterna-lora-placement-scorer`` (weight 6: above no-hit-lru's 4, so the per-adapter
    replica bound holds; neutral for base-model requests). docs/design/lora.md has the measurements."""
    return _single([("cost-model-scorer", 1, None), ("no-hit-lru-scorer", 4, None),
                    ("lanterna-lora-placement-scorer", 6, None), ("max-score-picker", None, None)])


POLICIES: dict[str, Callable[[], EppConfig]] = {
    "round-robin": lambda: _single([("round-robin", None, None)]),
    "random": lambda: _single([("random-picker", None, None)]),
    "llm-d-default": default_epp_config,
    "approximate": default_epp_config,
    "precise": _precise,
    "precise-no-hit-lru": _precise_no_hit_lru,
    "approximate-no-hit-lru": _approximate_no_hit_lru,
    "lanterna": lanterna_recommended_config,
    "llm-d-lora": _llmd_lora,
    "lanterna-lora": _lanterna_lora,
    # SLO-aware routing (docs/design/slo.md): the predictor alone, and llm-d's prefix+load weights beside it
    "predicted-latency": lambda: _single([("predicted-latency-scorer", 1, None), ("max-score-picker", None, None)]),
    "prefix-load": lambda: _single([("prefix-cache-scorer", 3, None), ("queue-scorer", 2, None),
                                    ("kv-cache-utilization-scorer", 2, None), ("max-score-picker", None, None)]),
    "pd": lambda: parse_epp_config(pd_policy_doc(256)),  # the virtual P/D cluster uses cluster.pd.threshold
}


def resolve_policy(policy: str) -> EppConfig:
    """A policy name from ``POLICIES`` or a path to an EndpointPickerConfig YAML."""
    factory = POLICIES.get(policy)
    if factory is not None:
        return factory()
    if policy.endswith((".yaml", ".yml")) or Path(policy).is_file():
        return load_epp_config(Path(policy))
    raise ConfigError(f"unknown policy {policy!r}; known: {', '.join(sorted(POLICIES))} or a YAML path")


def pd_policy_doc(threshold: int) -> dict[str, Any]:
    """The P/D EndpointPickerConfig (examples/epp/pd.yaml with ``nonCachedTokens = threshold``): the decode
    profile (prefix 2 + queue) serves; the prefill profile (queue) runs when the decider says so."""
    profile = [{"pluginRef": "queue-scorer"}, {"pluginRef": "max-score-picker"}]
    return {"apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig",
            "plugins": [{"type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": threshold}},
                        {"type": "disagg-profile-handler"}, {"type": "prefill-filter"}, {"type": "decode-filter"},
                        {"type": "prefix-cache-scorer"}, {"type": "queue-scorer"}, {"type": "max-score-picker"}],
            "schedulingProfiles": [
                {"name": "prefill", "plugins": [{"pluginRef": "prefill-filter"}, *profile]},
                {"name": "decode", "plugins": [{"pluginRef": "decode-filter"},
                                               {"pluginRef": "prefix-cache-scorer", "weight": 2}, *profile]}]}
