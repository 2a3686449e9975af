"""The Kubernetes actuator: the official client reads and patches ``deployments/{name}/scale`` on a loopback API
server speaking the real subresource (``fake_apiserver``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from lanterna.k8s.scale import DeploymentScaler
from tests.unit.k8s.fake_apiserver import FakeApiServer, deployment, pod


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


async def test_autoscale_cli_sources_discover_ready_pods_and_scale_through_one_client(tmp_path: Path) -> None:
    """What ``lanterna deploy render --autoscaler`` runs: ``--selector`` gives the ready matching pods (watch
    updates: test_discovery) and ``--actuate k8s`` patches the named Deployment, over one kubeconfig'd client."""
    from lanterna.cli.autoscale import open_sources
    from lanterna.cli.main import build_parser

    srv = FakeApiServer()
    url = await srv.start()
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{url}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: u}}}}]
current-context: fake
""")
    labels = {"app": "vllm", "llm-d.ai/role": "both"}
    srv.put("deployments", deployment("vllm", 2, labels, namespace="llm"))
    srv.put("pods", pod("a", "10.0.0.1", labels, namespace="llm"))
    srv.put("pods", pod("b", "10.0.0.2", labels, ready=False, namespace="llm"))
    srv.put("pods", pod("c", "10.0.0.3", {"app": "vllm", "llm-d.ai/role": "prefill"}, namespace="llm"))
    args = build_parser().parse_args(
        ["autoscale", "--selector", "app=vllm,llm-d.ai/role=both", "--target-port", "8000", "--namespace", "llm",
         "--actuate", "k8s", "--deployment", "vllm", "--kubeconfig", str(cfg)])
    src = await open_sources(args, "vllm")
    try:
        await src.disc.wait_synced()
        assert src.endpoints() == {"vllm": ["10.0.0.1:8000"]}
        assert await src.actuator.replicas() == {"vllm": 2}
        await src.actuator.scale("vllm", 3)
        assert srv.objects[("deployments", "llm", "vllm")]["spec"]["replicas"] == 3
    finally:
        await src.close()
        await srv.close()
