"""``lanterna gateway --pool`` end to end: Kubernetes discovery (real client, loopback API server) feeding a real
gateway process, in front of real ``lanterna sim`` pods whose KV-event publishers *connect* to the gateway's
bound SUB socket (llm-d's ``kvEventsConfig.zmqEndpoint`` wiring), so the index learns who holds what from topics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port
from tests.integration.test_gateway_support import GatewayProc, run_lanterna
from tests.unit.k8s.fake_apiserver import FakeApiServer, pod, pool_v1

pytestmark = pytest.mark.integration

MODEL = "sim-model"
POOLS = "inferencepools/inference.networking.k8s.io/v1"
LABELS = {"app": "sim"}


class ApiThread:
    """The loopback API server on its own event loop thread (the test itself is synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = FakeApiServer()
        self.url = asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)

    def do(self, fn: Callable[..., None], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@contextlib.contextmanager
def sim(host: str, port: int, kv_connect: str, log_dir: Path) -> Iterator[None]:
    kv = json.dumps({"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": kv_connect})
    with open(log_dir / f"sim-{host}-{port}.log", "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "lanterna.cli.main", "sim", "--model", MODEL, "--host", host,
                                 "--port", str(port), "--timing", "constant", "--block-size", "16",
                                 "--enable-prompt-tokens-details", "--kv-events-config", kv],
                                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "sim did not start"
                time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def _complete(g: GatewayProc, prompt: str) -> tuple[str, int]:
    body = json.dumps({"model": MODEL, "prompt": prompt, "max_tokens": 2}).encode()
    req = urllib.request.Request(g.url + "/v1/completions", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        usage = json.loads(r.read())["usage"]
        return r.headers["x-gateway-destination-endpoint"], usage["prompt_tokens_details"]["cached_tokens"] or 0


def _endpoints(g: GatewayProc) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in g.get_json("/debug/endpoints")["endpoints"]}


def _wait(pred: Callable[[], bool], what: str, g: GatewayProc, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{g.log_tail()}"
        time.sleep(0.05)


def test_gateway_follows_pool_pods_and_takes_kv_events_by_topic(tmp_path: Path) -> None:
    port, kv_port = free_port(), free_port()
    api = ApiThread()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": api.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "u", "namespace": "default"}}]}))
    epp = tmp_path / "epp.yaml"  # llm-d's precise-routing config, verbatim: the EPP binds, pods connect
    epp.write_text(yaml.safe_dump({
        "apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig",
        "plugins": [{"type": "precise-prefix-cache-scorer", "parameters": {
                        "kvEventsConfig": {"zmqEndpoint": f"tcp://*:{kv_port}", "topicFilter": "kv@"}}},
                    {"type": "max-score-picker"}],
        "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "precise-prefix-cache-scorer"},
                                                               {"pluginRef": "max-score-picker"}]}]}))
    a, b = f"127.0.0.1:{port}", f"127.0.0.2:{port}"
    try:
        api.do(api.fake.put, POOLS, pool_v1("sims", LABELS, [port]))
        api.do(api.fake.put, "pods", pod("sim-a", "127.0.0.1", LABELS))
        connect = f"tcp://127.0.0.1:{kv_port}"
        with sim("127.0.0.1", port, connect, tmp_path), sim("127.0.0.2", port, connect, tmp_path), \
                run_lanterna(["gateway", "--pool", "sims", "--namespace", "default", "--kubeconfig", str(kubeconfig),
                              "--model", MODEL, "--scheduler-config", str(epp), "--set", "kvindex.tokenizer=default",
                              "--log-format", "text"], tmp_path, min_ready=1) as g:
            assert set(_endpoints(g)) == {a}
            prefix = "A long shared document about astronomy. " * 30
            first, _ = _complete(g, prefix + "One?")
            assert first == a
            # sim-a's publisher connected to the gateway's socket; its topic kv@127.0.0.1:<port>@sim-model names it
            _wait(lambda: (_endpoints(g)[a]["kv_index_blocks"] or 0) > 0, "KV events from sim-a", g)

            api.do(api.fake.put, "pods", pod("sim-b", "127.0.0.2", LABELS))  # scale out
            _wait(lambda: g.get_json("/health")["ready_endpoints"] == 2, "sim-b discovered", g)
            again, cached = _complete(g, prefix + "Two?")
            assert again == a and cached > 0  # precise routing still sends the repeat where the blocks are
            other = "Botany notes, a completely different long document. " * 30
            picks = {_complete(g, other + f"Q{i}?")[0] for i in range(3)}
            _wait(lambda: sum((e["kv_index_blocks"] or 0) > 0 for e in _endpoints(g).values()) >= len(picks),
                  "KV events from every endpoint served", g)

            api.do(api.fake.put, "pods", pod("sim-a", "127.0.0.1", LABELS, ready=False))  # readiness fails
            _wait(lambda: set(_endpoints(g)) == {b}, "sim-a removed", g)
            assert _complete(g, prefix + "Three?")[0] == b
    finally:
        api.close()
