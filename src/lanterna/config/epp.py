"""llm-d ``EndpointPickerConfig``: parse and validate the scheduler YAML, with llm-d's defaults.

Kept verbatim-compatible so llm-d users bring their configs: ``plugins: [{name?, type, parameters?}]``,
``schedulingProfiles: [{name, plugins: [{pluginRef, weight?}]}]``; a plugin's name defaults to its type
and a weight to 1. Every problem becomes one ``ConfigError`` whose message names the offending entry.

This module checks the document's shape only; plugin types and parameters are the scheduler's to judge
(``lanterna.scheduler.load_epp_config`` does both), so config never imports the scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lanterna.config.yamltext import parse_yaml, read_text
from lanterna.errors import ConfigError

API_VERSIONS = ("llm-d.ai/v1alpha1", "inference.networking.x-k8s.io/v1alpha1")
KIND = "EndpointPickerConfig"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PluginSpec(_Strict):
    type: str = Field(min_length=1)
    name: str | None = None
    parameters: dict[str, Any] | None = None

    @property
    def instance_name(self) -> str:
        return self.name or self.type


class ProfilePluginRef(_Strict):
    pluginRef: str = Field(min_length=1)
    weight: float | None = None

    @field_validator("weight")
    @classmethod
    def _weight_ok(cls, w: float | None) -> float | None:
        if w is not None and (not math.isfinite(w) or w < 0):
            raise ValueError("weight must be a finite number >= 0")
        return w

    @property
    def effective_weight(self) -> float:
        return 1.0 if self.weight is None else self.weight


class SchedulingProfileSpec(_Strict):
    name: str = Field(min_length=1)
    plugins: list[ProfilePluginRef] = Field(default_factory=list)


class EppConfig(_Strict):
    """The validated config. Cross-references (pluginRef, unique names) are checked here; plugin types
    and parameters by ``load_epp_config`` against the plugin registry."""

    apiVersion: Literal["llm-d.ai/v1alpha1", "inference.networking.x-k8s.io/v1alpha1"] = "llm-d.ai/v1alpha1"
    kind: Literal["EndpointPickerConfig"] = "EndpointPickerConfig"
    plugins: list[PluginSpec] = Field(min_length=1)
    schedulingProfiles: list[SchedulingProfileSpec] = Field(min_length=1)
    # Accepted for llm-d compatibility; the gateway's flow control owns these concerns.
    featureGates: list[str] | None = None
    saturationDetector: dict[str, Any] | None = None
    data: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _cross_refs(self) -> EppConfig:
        names: set[str] = set()
        for p in self.plugins:
            if p.instance_name in names:
                raise ValueError(f"duplicate plugin name {p.instance_name!r} (give each instance a unique name)")
            names.add(p.instance_name)
        profiles: set[str] = set()
        for prof in self.schedulingProfiles:
            if prof.name in profiles:
                raise ValueError(f"duplicate scheduling profile {prof.name!r}")
            profiles.add(prof.name)
            for ref in prof.plugins:
                if ref.pluginRef not in names:
                    raise ValueError(
                        f"profile {prof.name!r} references unknown plugin {ref.pluginRef!r}; "
                        f"defined plugins: {', '.join(sorted(names))}"
                    )
        return self

    def plugin(self, name: str) -> PluginSpec:
        return next(p for p in self.plugins if p.instance_name == name)


def _cfg(plugins: list[dict[str, Any]], profile: list[tuple[str, float | None]]) -> EppConfig:
    refs = [{"pluginRef": n} if w is None else {"pluginRef": n, "weight": w} for n, w in profile]
    return EppConfig.model_validate(
        {"plugins": plugins, "schedulingProfiles": [{"name": "default", "plugins": refs}]}
    )


def default_epp_config() -> EppConfig:
    """llm-d's default: queue-scorer 2, kv-cache-utilization-scorer 2, prefix-cache-scorer 3, max-score."""
    return _cfg(
        [{"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"}, {"type": "prefix-cache-scorer"},
         {"type": "max-score-picker"}],
        [("queue-scorer", 2), ("kv-cache-utilization-scorer", 2), ("prefix-cache-scorer", 3),
         ("max-score-picker", None)],
    )


def lanterna_recommended_config() -> EppConfig:
    """Our best single-profile policy (``--scheduler-config lanterna``).

    ``cost-model-scorer`` prices each replica as the prefill work this request would wait for there (its
    own uncached tokens, a share of the replica's queued prefill, a small per-sequence decode pressure),
    from the precise KV-event index when wired in (plus prefixes still in flight), else the approximate
    one: a warm session stays unless its replica is far busier, a burst of one prefix spreads once queues
    build, new sessions go to the least loaded replica. ``no-hit-lru-scorer`` (weight 4) seeds prefixes
    that no replica holds or is computing (the cost model's producer marks in-flight prefixes as hits) on
    the least recently used replica, so each replica owns an equal share of prefixes and of the load they
    bring later; with any hit it is neutral and the cost model decides. docs/design/scheduler.md has the
    measurements."""
    return _cfg(
        [{"type": "cost-model-scorer"}, {"type": "no-hit-lru-scorer"}, {"type": "max-score-picker"}],
        [("cost-model-scorer", 1), ("no-hit-lru-scorer", 4), ("max-score-picker", None)],
    )


SHORTHANDS = {"default": default_epp_config, "llm-d": default_epp_config, "lanterna": lanterna_recommended_config}


def _format(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_epp_config(data: Mapping[str, Any]) -> EppConfig:
    """Validate an already-parsed mapping (e.g. the ``scheduler`` section of the Lanterna config)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"scheduler config: expected a mapping, got {type(data).__name__}")
    try:
        cfg = EppConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"invalid EndpointPickerConfig: {_format(exc)}") from None
    return cfg


def load_epp_config(source: str | Path | Mapping[str, Any]) -> EppConfig:
    """Load from a shorthand (``default``/``lanterna``), a file path, YAML text, or a mapping."""
    if isinstance(source, Mapping):
        return parse_epp_config(source)
    if isinstance(source, str) and source.strip() in SHORTHANDS:
        return SHORTHANDS[source.strip()]()
    text = str(source)
    if not text.strip():
        raise ConfigError("scheduler config is empty")
    if isinstance(source, Path) or ("\n" not in text and ":" not in text.split("/")[-1]):
        text = read_text(Path(text), "scheduler config")
    data = parse_yaml(text, "scheduler config")
    if data is None:
        raise ConfigError("scheduler config is empty")
    return parse_epp_config(data)
