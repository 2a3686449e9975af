"""Kubernetes discovery, the pure half: wire shapes of pods and InferencePools, and what endpoints they make.

No client and no I/O here: ``discovery.py`` decodes list/watch bytes into these Structs and asks this module
which endpoints a pod stands for. The rules (GAIE's endpoint picker's, so an llm-d user sees the same set):

- a pod counts only while it is *ready*: ``status.podIP`` set, condition ``Ready`` true, not being deleted;
- each target port of the pool is one endpoint ``<podIP>:<port>`` (vLLM data-parallel ranks each serve on their
  own port, so one pod with ``targetPorts [8000, 8001]`` is two endpoints; the rank is the port's position);
- the pod's labels travel with the endpoint (``llm-d.ai/role`` picks prefill/decode), plus ``lanterna.ai/pod``
  and ``lanterna.ai/dp-rank``;
- a pod's KV-event publisher, when the gateway dials out to each pod, is ``tcp://<podIP>:<kv_port + rank>``
  (vLLM offsets the publisher's port by the data-parallel rank); the pod annotation ``lanterna.ai/kv-events-port``
  overrides the configured port.

InferencePool shapes: ``inference.networking.k8s.io/v1`` has ``spec.selector.matchLabels`` and
``spec.targetPorts[].number``; the older ``inference.networking.x-k8s.io/v1alpha2`` has ``spec.selector`` as a
plain label map and one ``spec.targetPortNumber``. Both decode into ``PoolTarget``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

POD_LABEL = "lanterna.ai/pod"
RANK_LABEL = "lanterna.ai/dp-rank"
KV_PORT_ANNOTATION = "lanterna.ai/kv-events-port"

POOL_GROUP_V1 = "inference.networking.k8s.io"
POOL_GROUP_V1ALPHA2 = "inference.networking.x-k8s.io"
POOL_PLURAL = "inferencepools"
POOL_VERSIONS: dict[str, str] = {"v1": POOL_GROUP_V1, "v1alpha2": POOL_GROUP_V1ALPHA2}


class ObjectMeta(msgspec.Struct, frozen=True):
    name: str = ""
    namespace: str = ""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    resourceVersion: str = ""  # noqa: N815 (Kubernetes' field names)
    deletionTimestamp: str | None = None  # noqa: N815


class PodCondition(msgspec.Struct, frozen=True):
    type: str
    status: str = ""


class PodStatus(msgspec.Struct, frozen=True):
    phase: str = ""
    podIP: str | None = None  # noqa: N815
    conditions: list[PodCondition] = []


class Pod(msgspec.Struct, frozen=True):
    metadata: ObjectMeta = ObjectMeta()
    status: PodStatus = PodStatus()


class PoolSpec(msgspec.Struct, frozen=True):
    selector: dict[str, Any] = {}
    targetPorts: list[dict[str, Any]] = []  # noqa: N815 (v1: [{number: 8000}])
    targetPortNumber: int | None = None  # noqa: N815 (v1alpha2)


class InferencePool(msgspec.Struct, frozen=True):
    metadata: ObjectMeta = ObjectMeta()
    spec: PoolSpec = PoolSpec()


class ListMeta(msgspec.Struct, frozen=True):
    resourceVersion: str = ""  # noqa: N815


class Status(msgspec.Struct, frozen=True):
    """A ``kind: Status`` object: an API error, in a watch stream as an ``ERROR`` event (410 Gone: relist)."""

    code: int = 0
    reason: str = ""
    message: str = ""


class WatchEvent(msgspec.Struct, frozen=True):
    """One line of a watch stream: ``ADDED`` / ``MODIFIED`` / ``DELETED`` / ``BOOKMARK`` / ``ERROR``."""

    type: str
    object: msgspec.Raw


class PodList(msgspec.Struct, frozen=True):
    metadata: ListMeta = ListMeta()
    items: list[Pod] = []


class PoolList(msgspec.Struct, frozen=True):
    metadata: ListMeta = ListMeta()
    items: list[InferencePool] = []


@dataclass(frozen=True, slots=True)
class PoolTarget:
    """Which pods (label equality, ANDed) and which of their ports are endpoints."""

    match_labels: tuple[tuple[str, str], ...]
    ports: tuple[int, ...]

    @property
    def selector(self) -> str:
        """The ``labelSelector`` query string (``k=v,k2=v2``)."""
        return ",".join(f"{k}={v}" for k, v in self.match_labels)


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One endpoint a ready pod stands for; equal specs need no update downstream."""

    id: str  # host:port, also the address
    labels: tuple[tuple[str, str], ...]
    kv_events: str | None
    pod: str


class PoolShapeError(ValueError):
    """An InferencePool whose spec names no labels or no ports (routing to it would match everything or nothing)."""


def pool_target(pool: InferencePool) -> PoolTarget:
    """The target of a v1 or v1alpha2 pool (raises PoolShapeError when it has no selector or no port)."""
    sel = pool.spec.selector
    inner = sel.get("matchLabels")
    raw: dict[str, Any] = inner if isinstance(inner, dict) else sel
    labels = tuple(sorted((str(k), str(v)) for k, v in raw.items() if isinstance(v, str | int)))
    ports = [int(p["number"]) for p in pool.spec.targetPorts if isinstance(p.get("number"), int)]
    if not ports and pool.spec.targetPortNumber is not None:
        ports = [pool.spec.targetPortNumber]
    if not labels:
        raise PoolShapeError(f"InferencePool {pool.metadata.name}: spec.selector has no matchLabels")
    if not ports:
        raise PoolShapeError(f"InferencePool {pool.metadata.name}: no spec.targetPorts")
    return PoolTarget(labels, tuple(ports))


def parse_selector(text: str) -> tuple[tuple[str, str], ...]:
    """``app=vllm,llm-d.ai/inferenceServing=true`` -> sorted pairs (equality selectors only, as a pool has)."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.rstrip("=")  # accept k==v
        value = value.lstrip("=")
        if not sep or not key or "!" in key:
            raise ValueError(f"selector {text!r}: only key=value terms are supported, got {part!r}")
        out.append((key.strip(), value.strip()))
    if not out:
        raise ValueError("selector is empty")
    return tuple(sorted(out))


def is_ready(pod: Pod) -> bool:
    s = pod.status
    if pod.metadata.deletionTimestamp is not None or not s.podIP:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in s.conditions)


def matches(pod: Pod, target: PoolTarget) -> bool:
    labels = pod.metadata.labels
    return all(labels.get(k) == v for k, v in target.match_labels)


def pod_endpoints(pod: Pod, target: PoolTarget, kv_port: int | None = None) -> list[EndpointSpec]:
    """The endpoints a pod stands for now: none unless ready and matching, else one per target port."""
    if not (is_ready(pod) and matches(pod, target)):
        return []
    ip = pod.status.podIP
    assert ip is not None  # is_ready checked it
    host = f"[{ip}]" if ":" in ip else ip
    ann = pod.metadata.annotations.get(KV_PORT_ANNOTATION, "")
    base_kv = int(ann) if ann.isdigit() else kv_port
    multi = len(target.ports) > 1
    out = []
    for rank, port in enumerate(target.ports):
        labels = dict(pod.metadata.labels)
        labels[POD_LABEL] = pod.metadata.name
        if multi:
            labels[RANK_LABEL] = str(rank)
        kv = f"tcp://{host}:{base_kv + rank}" if base_kv is not None else None
        out.append(EndpointSpec(f"{host}:{port}", tuple(sorted(labels.items())), kv, pod.metadata.name))
    return out


def diff(current: dict[str, EndpointSpec], desired: dict[str, EndpointSpec]) -> tuple[list[str], list[EndpointSpec]]:
    """What to remove (ids) and add (specs) to turn ``current`` into ``desired``; a changed spec is both."""
    removed = [eid for eid, spec in current.items() if desired.get(eid) != spec]
    added = [spec for eid, spec in desired.items() if current.get(eid) != spec]
    return removed, added
