"""The Kubernetes actuator: the official client reads and patches ``deployments/{name}/scale`` on a loopback API
server speaking the real subresource (``fake_apiserver``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from lanterna.k8s.scale import DeploymentScaler
from tests.unit.k8s.fake_apiserver import FakeApiServer, deployment


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeApiServer, object]]:
    srv = FakeApiServer()
    url = await srv.start()
    api = client.ApiClient(client.Configuration(host=url))  # type: ignore[attr-defined]
    try:
        yield srv, api
    finally:
        await api.close()
        await srv.close()


async def test_reads_and_patches_the_scale_subresource(fake: tuple[FakeApiServer, object]) -> None:
    srv, api = fake
    srv.put("deployments", deployment("llama-l4", 2, {"app": "llama"}, namespace="llm"))
    srv.put("deployments", deployment("llama-a100", 0, {"app": "llama-big"}, namespace="llm"))
    scaler = DeploymentScaler(api, "llm", {"v1-l4": "llama-l4", "v2-a100": "llama-a100"})
    assert await scaler.replicas() == {"v1-l4": 2, "v2-a100": 0}
    await scaler.scale("v1-l4", 3)
    await scaler.scale("v2-a100", 0)
    assert await scaler.replicas() == {"v1-l4": 3, "v2-a100": 0}
    assert srv.objects[("deployments", "llm", "llama-l4")]["spec"]["replicas"] == 3
    assert srv.scale_patches[0] == ("application/merge-patch+json", {"spec": {"replicas": 3}})


async def test_missing_deployment_raises(fake: tuple[FakeApiServer, object]) -> None:
    _, api = fake
    scaler = DeploymentScaler(api, "llm", {"v": "nope"})
    with pytest.raises(ApiException) as e:
        await scaler.replicas()
    assert e.value.status == 404
