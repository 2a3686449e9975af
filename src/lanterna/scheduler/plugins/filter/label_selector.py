"""Label filters: ``label-selector-filter`` (Kubernetes selector semantics) and ``by-label``.

``label-selector-filter`` params: ``matchLabels`` {key: value} (all must be equal) and
``matchExpressions`` [{key, operator: In|NotIn|Exists|DoesNotExist, values}] (all must hold).
``by-label`` params: ``label``, ``validValues`` (list), ``allowsNoLabel`` (default false)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest


class Expression(PluginParams):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_ok(self) -> Expression:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs non-empty values")
        return self

    def holds(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        inside = labels.get(self.key) in self.values
        return inside if self.operator == "In" else not inside


class SelectorParams(PluginParams):
    matchLabels: dict[str, str] = Field(default_factory=dict)
    matchExpressions: list[Expression] = Field(default_factory=list)


class ByLabelParams(PluginParams):
    label: str = Field(min_length=1)
    validValues: list[str] = Field(default_factory=list)
    allowsNoLabel: bool = False


@dataclass(slots=True)
class LabelSelectorFilter:
    name: str
    match_labels: dict[str, str]
    expressions: list[Expression]
    type_name: str = "label-selector-filter"

    def filter(self, req: SchedRequest, candidates: list[Endpoint]) -> list[Endpoint]:
        ml, ex = self.match_labels.items(), self.expressions
        return [
            e for e in candidates
            if all(e.labels.get(k) == v for k, v in ml) and all(x.holds(e.labels) for x in ex)
        ]


@dataclass(slots=True)
class ByLabelFilter:
    name: str
    label: str
    valid: frozenset[str]
    allow_missing: bool
    type_name: str = "by-label"

    def filter(self, req: SchedRequest, candidates: list[Endpoint]) -> list[Endpoint]:
        out = []
        for e in candidates:
            v = e.labels.get(self.label)
            if (v is None and self.allow_missing) or v in self.valid:
                out.append(e)
        return out


@register("label-selector-filter", "by-label-selector", params=SelectorParams)
def make_selector(name: str, params: Mapping[str, Any], services: SchedulerServices) -> LabelSelectorFilter:
    p = parse_params(SelectorParams, "label-selector-filter", name, params)
    return LabelSelectorFilter(name=name, match_labels=dict(p.matchLabels), expressions=list(p.matchExpressions))


@register("by-label", params=ByLabelParams)
def make_by_label(name: str, params: Mapping[str, Any], services: SchedulerServices) -> ByLabelFilter:
    p = parse_params(ByLabelParams, "by-label", name, params)
    return ByLabelFilter(name=name, label=p.label, valid=frozenset(p.validValues), allow_missing=p.allowsNoLabel)
