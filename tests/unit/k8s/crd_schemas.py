"""JSON schemas for the custom resources the manifests use, written from each CRD's published API (fields the
renderer sets; unknown fields rejected): Gateway API Inference Extension ``InferencePool`` v1, Gateway API
``HTTPRoute`` v1, prometheus-operator ``ServiceMonitor`` / ``PodMonitor`` / ``PrometheusRule`` v1.
``kubernetes-validate`` carries only built-in kinds, so these stand in for the CRDs' OpenAPI schemas."""

from __future__ import annotations

from typing import Any

_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"},
                                                                 "namespace": {"type": "string"},
                                                                 "labels": _LABELS}}
_SELECTOR = {"type": "object", "additionalProperties": False, "properties": {"matchLabels": _LABELS}}
_PORT_NUMBER = {"type": "integer", "minimum": 1, "maximum": 65535}


def _kind(api: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {"apiVersion": {"const": api}, "kind": {"const": kind}, "metadata": _META, "spec": spec}}


def _obj(required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required, "properties": props}


SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("inference.networking.k8s.io/v1", "InferencePool"): _kind(
        "inference.networking.k8s.io/v1", "InferencePool", _obj(["selector", "targetPorts", "endpointPickerRef"], {
            "selector": {**_SELECTOR, "required": ["matchLabels"]},
            "targetPorts": {"type": "array", "minItems": 1, "maxItems": 8,
                            "items": _obj(["number"], {"number": _PORT_NUMBER})},
            "endpointPickerRef": _obj(["name", "port"], {
                "group": {"type": "string"}, "kind": {"type": "string"}, "name": {"type": "string"},
                "port": _obj(["number"], {"number": _PORT_NUMBER}),
                "failureMode": {"enum": ["FailOpen", "FailClose"]}})})),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): _kind(
        "gateway.networking.k8s.io/v1", "HTTPRoute", _obj(["parentRefs", "rules"], {
            "parentRefs": {"type": "array", "items": _obj(["name"], {
                "group": {"type": "string"}, "kind": {"type": "string"}, "name": {"type": "string"},
                "namespace": {"type": "string"}, "sectionName": {"type": "string"}})},
            "rules": {"type": "array", "items": _obj([], {
                "matches": {"type": "array", "items": _obj([], {"path": _obj(["type", "value"], {
                    "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]}, "value": {"type": "string"}})})},
                "backendRefs": {"type": "array", "items": _obj(["name"], {
                    "group": {"type": "string"}, "kind": {"type": "string"}, "name": {"type": "string"},
                    "port": _PORT_NUMBER, "weight": {"type": "integer"}})},
                "timeouts": _obj([], {"request": {"type": "string", "pattern": r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"},
                                      "backendRequest": {"type": "string"}})})}})),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _kind(
        "monitoring.coreos.com/v1", "ServiceMonitor", _obj(["selector", "endpoints"], {
            "selector": _SELECTOR,
            "endpoints": {"type": "array", "items": _obj([], {"port": {"type": "string"}, "path": {"type": "string"},
                                                              "interval": {"type": "string"}})}})),
    ("monitoring.coreos.com/v1", "PodMonitor"): _kind(
        "monitoring.coreos.com/v1", "PodMonitor", _obj(["selector", "podMetricsEndpoints"], {
            "selector": _SELECTOR,
            "podMetricsEndpoints": {"type": "array", "items": _obj([], {
                "port": {"type": "string"}, "path": {"type": "string"}, "interval": {"type": "string"},
                "relabelings": {"type": "array", "items": _obj([], {
                    "sourceLabels": {"type": "array", "items": {"type": "string"}},
                    "targetLabel": {"type": "string"}, "action": {"type": "string"}})}})}})),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _kind(
        "monitoring.coreos.com/v1", "PrometheusRule", _obj(["groups"], {
            "groups": {"type": "array", "items": _obj(["name", "rules"], {
                "name": {"type": "string"},
                "rules": {"type": "array", "items": _obj(["expr"], {
                    "alert": {"type": "string"}, "record": {"type": "string"}, "expr": {"type": "string"},
                    "for": {"type": "string", "pattern": r"^(0|(([0-9]+)(y|w|d|h|m|s|ms))+)$"},
                    "labels": _LABELS, "annotations": _LABELS})}})}})),
}
