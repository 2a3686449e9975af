"""The pure discovery rules: pool shapes, readiness, selectors, endpoint specs and diffs."""

from __future__ import annotations

import msgspec
import pytest

from lanterna.k8s.discovery_model import (
    EndpointSpec,
    InferencePool,
    Pod,
    PoolShapeError,
    PoolTarget,
    diff,
    is_ready,
    parse_selector,
    pod_endpoints,
    pool_target,
)
from tests.unit.k8s.fake_apiserver import pod, pool_v1, pool_v1alpha2


def _pod(**kw: object) -> Pod:
    return msgspec.convert(pod(**kw), Pod)  # type: ignore[arg-type]


@pytest.mark.parametrize(("obj", "want"), [
    (pool_v1("p", {"app": "vllm", "tier": "a"}, [8000, 8001]), PoolTarget((("app", "vllm"), ("tier", "a")), (8000, 8001))),
    (pool_v1alpha2("p", {"app": "vllm"}, 8000), PoolTarget((("app", "vllm"),), (8000,))),
], ids=["v1", "v1alpha2"])
def test_pool_target_shapes(obj: dict, want: PoolTarget) -> None:
    assert pool_target(msgspec.convert(obj, InferencePool)) == want
    assert want.selector == ",".join(f"{k}={v}" for k, v in want.match_labels)


@pytest.mark.parametrize("obj", [pool_v1("p", {}, [8000]), pool_v1("p", {"a": "b"}, [])], ids=["no-labels", "no-ports"])
def test_pool_without_labels_or_ports_is_refused(obj: dict) -> None:
    with pytest.raises(PoolShapeError):
        pool_target(msgspec.convert(obj, InferencePool))


@pytest.mark.parametrize(("kw", "ready"), [
    ({"name": "a", "ip": "10.0.0.1", "labels": {}}, True),
    ({"name": "a", "ip": "10.0.0.1", "labels": {}, "ready": False}, False),
    ({"name": "a", "ip": None, "labels": {}}, False),
], ids=["ready", "not-ready", "no-ip"])
def test_readiness(kw: dict, ready: bool) -> None:
    assert is_ready(_pod(**kw)) is ready


def test_terminating_pod_is_not_ready() -> None:
    obj = pod("a", "10.0.0.1", {})
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not is_ready(msgspec.convert(obj, Pod))


def test_selector_parsing() -> None:
    assert parse_selector("b=2, a==1") == (("a", "1"), ("b", "2"))
    for bad in ("", "a!=1", "app"):
        with pytest.raises(ValueError):
            parse_selector(bad)


def test_pod_endpoints_one_per_port_with_rank_and_kv_address() -> None:
    target = PoolTarget((("app", "vllm"),), (8000, 8001))
    eps = pod_endpoints(_pod(name="a", ip="fd00::5", labels={"app": "vllm"}), target, kv_port=5557)
    assert [e.id for e in eps] == ["[fd00::5]:8000", "[fd00::5]:8001"]
    assert [e.kv_events for e in eps] == ["tcp://[fd00::5]:5557", "tcp://[fd00::5]:5558"]
    assert dict(eps[1].labels)["lanterna.ai/dp-rank"] == "1"
    assert pod_endpoints(_pod(name="a", ip="10.0.0.1", labels={"app": "web"}), target) == []


def test_diff_replaces_changed_specs() -> None:
    a = EndpointSpec("a:1", (("r", "x"),), None, "a")
    a2 = EndpointSpec("a:1", (("r", "y"),), None, "a")
    b = EndpointSpec("b:1", (), None, "b")
    c = EndpointSpec("c:1", (), None, "c")
    assert diff({"a:1": a, "b:1": b}, {"a:1": a2, "c:1": c}) == (["a:1", "b:1"], [a2, c])
    assert diff({"a:1": a}, {"a:1": a}) == ([], [])
