"""Discovery against a Kubernetes API on the wire: the real ``kubernetes_asyncio`` client talks to a loopback API
server (``fake_apiserver``: no real kube-apiserver can be installed here) speaking list/watch with chunked JSON
events, resourceVersions, bookmarks and 410 Gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from lanterna.endpoints.types import ROLE_LABEL, Endpoint
from lanterna.k8s.discovery import DiscoverySpec, KubeDiscovery, make_api_client
from tests.unit.k8s.fake_apiserver import FakeApiServer, pod, pool_v1, pool_v1alpha2

SEL = {"app": "vllm", "llm-d.ai/inferenceServing": "true"}
V1_POOLS = "inferencepools/inference.networking.k8s.io/v1"
ALPHA_POOLS = "inferencepools/inference.networking.x-k8s.io/v1alpha2"


class RecordingSink:
    """An ``EndpointSink`` that keeps what it holds and lets a test await a state (no sleeps)."""

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.ops: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    async def add_endpoint(self, ep: Endpoint) -> None:
        assert ep.id not in self.endpoints, f"added twice without a removal: {ep.id}"
        self.endpoints[ep.id] = ep
        self.ops.append(("add", ep.id))
        self._changed.set()

    async def remove_endpoint(self, endpoint_id: str) -> None:
        assert endpoint_id in self.endpoints, f"removed an unknown endpoint: {endpoint_id}"
        del self.endpoints[endpoint_id]
        self.ops.append(("remove", endpoint_id))
        self._changed.set()

    async def wait(self, pred: Callable[[dict[str, Endpoint]], bool], timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not pred(self.endpoints):
                self._changed.clear()
                await self._changed.wait()

    async def wait_ids(self, *ids: str) -> None:
        await self.wait(lambda eps: set(eps) == set(ids))


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    fake = FakeApiServer()
    fake.url = await fake.start()  # type: ignore[attr-defined]
    yield fake
    await fake.close()


async def _run(fake: FakeApiServer, spec: DiscoverySpec) -> tuple[KubeDiscovery, RecordingSink, Any]:
    conf = client.Configuration(host=fake.url)  # type: ignore[attr-defined]
    api_client = client.ApiClient(conf)
    sink = RecordingSink()
    disc = KubeDiscovery(api_client, spec, sink)
    disc.start()
    return disc, sink, api_client


@pytest.fixture
async def selector_run(api: FakeApiServer) -> AsyncIterator[tuple[FakeApiServer, KubeDiscovery, RecordingSink]]:
    api.put("pods", pod("a", "10.0.0.1", SEL))
    api.put("pods", pod("b", "10.0.0.2", {**SEL, ROLE_LABEL: "prefill"}))
    api.put("pods", pod("c", "10.0.0.3", SEL, ready=False))
    api.put("pods", pod("other", "10.0.0.9", {"app": "web"}))
    disc, sink, api_client = await _run(api, DiscoverySpec(selector="app=vllm,llm-d.ai/inferenceServing=true",
                                                           target_ports=(8000,)))
    await disc.wait_synced()
    yield api, disc, sink
    await disc.close()
    await api_client.close()


async def test_list_gives_ready_matching_pods_with_roles(selector_run: Any) -> None:
    _, disc, sink = selector_run
    assert set(sink.endpoints) == {"10.0.0.1:8000", "10.0.0.2:8000"}
    assert sink.endpoints["10.0.0.2:8000"].role == "prefill"
    assert sink.endpoints["10.0.0.1:8000"].role == "decode"
    assert sink.endpoints["10.0.0.1:8000"].labels["lanterna.ai/pod"] == "a"
    assert disc.stats.num_lists == 1


async def test_pod_added_removed_not_ready_and_back(selector_run: Any) -> None:
    fake, disc, sink = selector_run
    fake.put("pods", pod("d", "10.0.0.4", SEL))
    await sink.wait_ids("10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.4:8000")
    fake.put("pods", pod("a", "10.0.0.1", SEL, ready=False))  # readiness probe failing
    await sink.wait_ids("10.0.0.2:8000", "10.0.0.4:8000")
    fake.put("pods", pod("c", "10.0.0.3", SEL))  # c becomes ready
    await sink.wait_ids("10.0.0.2:8000", "10.0.0.3:8000", "10.0.0.4:8000")
    fake.delete("pods", "d")
    await sink.wait_ids("10.0.0.2:8000", "10.0.0.3:8000")
    assert disc.stats.num_lists == 1 and disc.stats.num_gone == 0


async def test_relabelled_out_of_selector_and_role_change(selector_run: Any) -> None:
    fake, _, sink = selector_run
    fake.put("pods", pod("a", "10.0.0.1", {"app": "vllm"}))  # leaves the selector: the watch says DELETED
    await sink.wait_ids("10.0.0.2:8000")
    fake.put("pods", pod("b", "10.0.0.2", {**SEL, ROLE_LABEL: "decode"}))  # still selected, new role
    await sink.wait(lambda eps: eps["10.0.0.2:8000"].role == "decode")
    assert sink.ops[-2:] == [("remove", "10.0.0.2:8000"), ("add", "10.0.0.2:8000")]
    fake.put("pods", pod("a", "10.0.0.1", SEL))  # back in
    await sink.wait_ids("10.0.0.1:8000", "10.0.0.2:8000")


async def test_watch_dropped_resumes_from_version_without_relist(selector_run: Any) -> None:
    fake, disc, sink = selector_run
    await fake.wait_watching()
    watches = fake.num_watch_requests
    fake.drop_watches()
    fake.put("pods", pod("e", "10.0.0.5", SEL))  # may land before or after the client resumes: not lost either way
    await sink.wait_ids("10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.5:8000")
    assert fake.num_watch_requests > watches
    assert disc.stats.num_resumes >= 1
    assert disc.stats.num_lists == 1 and fake.num_list_requests == 1  # resumed, not relisted


async def test_410_gone_relists_and_catches_up(selector_run: Any) -> None:
    fake, disc, sink = selector_run
    await fake.wait_watching()
    fake.hold()  # the resumed watch waits while the cluster moves on
    fake.drop_watches()
    fake.put("pods", pod("f", "10.0.0.6", SEL))
    fake.delete("pods", "a")
    fake.put("pods", pod("b", "10.0.0.2", SEL, ready=False))
    fake.compact()  # the client's version is gone from history
    fake.release()
    await sink.wait_ids("10.0.0.6:8000")
    assert disc.stats.num_gone == 1
    assert disc.stats.num_lists == 2
    assert ("remove", "10.0.0.6:8000") not in sink.ops


async def test_server_side_timeout_resumes_with_bookmark(api: FakeApiServer) -> None:
    api.put("pods", pod("a", "10.0.0.1", SEL))
    disc, sink, api_client = await _run(api, DiscoverySpec(selector="app=vllm", watch_timeout_s=1))
    try:
        await disc.wait_synced()
        await sink.wait_ids("10.0.0.1:8000")
        await api.wait_watching()
        api.put("pods", pod("b", "10.0.0.2", {"app": "vllm"}))
        await sink.wait_ids("10.0.0.1:8000", "10.0.0.2:8000")
        await api.wait_watching(after=api.num_watch_requests)  # the 1 s server timeout ended it; resumed
        assert disc.stats.num_resumes >= 1
        api.put("pods", pod("c", "10.0.0.3", {"app": "vllm"}))
        await sink.wait_ids("10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000")
        assert disc.stats.num_lists == 1
    finally:
        await disc.close()
        await api_client.close()


async def test_pool_v1_data_parallel_ports_and_edits(api: FakeApiServer) -> None:
    labels = {"app": "vllm"}
    api.put(V1_POOLS, pool_v1("llama", labels, [8000, 8001]))
    api.put("pods", pod("a", "10.0.0.1", labels, annotations={"lanterna.ai/kv-events-port": "6000"}))
    api.put("pods", pod("b", "10.0.0.2", {"app": "other"}))
    disc, sink, api_client = await _run(api, DiscoverySpec(pool="llama", kv_events_port=5557))
    try:
        await sink.wait_ids("10.0.0.1:8000", "10.0.0.1:8001")
        r0, r1 = sink.endpoints["10.0.0.1:8000"], sink.endpoints["10.0.0.1:8001"]
        assert (r0.labels["lanterna.ai/dp-rank"], r1.labels["lanterna.ai/dp-rank"]) == ("0", "1")
        assert (r0.kv_events_endpoint, r1.kv_events_endpoint) == ("tcp://10.0.0.1:6000", "tcp://10.0.0.1:6001")
        # the pool is edited: another selector and one port
        api.put(V1_POOLS, pool_v1("llama", {"app": "other"}, [9000]))
        await sink.wait_ids("10.0.0.2:9000")
        assert sink.endpoints["10.0.0.2:9000"].kv_events_endpoint == "tcp://10.0.0.2:5557"
        api.put("pods", pod("c", "10.0.0.3", {"app": "other"}))  # the new pod watch follows the new selector
        await sink.wait_ids("10.0.0.2:9000", "10.0.0.3:9000")
        api.delete(V1_POOLS, "llama")
        await sink.wait_ids()
        api.put(V1_POOLS, pool_v1("llama", labels, [8000]))  # created again
        await sink.wait_ids("10.0.0.1:8000")
    finally:
        await disc.close()
        await api_client.close()


async def test_pool_created_after_start_and_other_pools_ignored(api: FakeApiServer) -> None:
    api.put(V1_POOLS, pool_v1("other", {"app": "vllm"}, [8000]))
    api.put("pods", pod("a", "10.0.0.1", {"app": "vllm"}))
    disc, sink, api_client = await _run(api, DiscoverySpec(pool="llama"))
    try:
        await disc.wait_synced()
        assert sink.endpoints == {}
        api.put(V1_POOLS, pool_v1("llama", {"app": "vllm"}, [8000]))
        await sink.wait_ids("10.0.0.1:8000")
    finally:
        await disc.close()
        await api_client.close()


async def test_pool_v1alpha2_when_v1_is_not_served(api: FakeApiServer) -> None:
    api.served_pool_versions = ("v1alpha2",)
    api.put(ALPHA_POOLS, pool_v1alpha2("llama", {"app": "vllm"}, 8000))
    api.put("pods", pod("a", "10.0.0.1", {"app": "vllm"}))
    disc, sink, api_client = await _run(api, DiscoverySpec(pool="llama"))
    try:
        await sink.wait_ids("10.0.0.1:8000")
        assert disc.target is not None and disc.target.ports == (8000,)
    finally:
        await disc.close()
        await api_client.close()


async def test_kubeconfig_file_is_read(api: FakeApiServer, tmp_path: Path) -> None:
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{api.url}"}}}}]
users: [{{name: u, user: {{token: secret-token}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: u, namespace: default}}}}]
current-context: fake
""")  # type: ignore[attr-defined]
    api.put("pods", pod("a", "10.0.0.1", {"app": "vllm"}))
    spec = DiscoverySpec(selector="app=vllm", kubeconfig=str(cfg))
    api_client = await make_api_client(spec)
    sink = RecordingSink()
    disc = KubeDiscovery(api_client, spec, sink)
    disc.start()
    try:
        await disc.wait_synced()
        assert set(sink.endpoints) == {"10.0.0.1:8000"}
    finally:
        await disc.close()
        await api_client.close()


def test_spec_needs_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        DiscoverySpec()
    with pytest.raises(ValueError, match="exactly one"):
        DiscoverySpec(pool="p", selector="a=b")
    with pytest.raises(ValueError, match="key=value"):
        DiscoverySpec(selector="app in (a,b)")
