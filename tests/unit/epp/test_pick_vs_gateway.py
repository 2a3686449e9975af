"""The ext_proc picker picks what the HTTP gateway picks: same config, same endpoints, same request sequence.

Both run the routing core on their own state; each request's response goes back to its state (the HTTP
gateway relays it, the picker reads it from Envoy's response messages), so the two states evolve alike."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from lanterna.endpoints.types import Endpoint
from lanterna.gateway.app import build_app, create_gateway, serve
from tests.conftest import free_port
from tests.unit.epp.conftest import picker_config, picker_for
from tests.unit.epp.envoy_replay import (
    request_body,
    request_headers,
    response_body,
    response_headers,
    set_headers,
)

PREFIX = "You are a helpful assistant. Answer briefly. " * 8
REQUESTS = [
    ("/v1/completions", {"model": "m", "prompt": PREFIX + "What is 2+2?", "max_tokens": 8}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}),
    ("/v1/completions", {"model": "m", "prompt": PREFIX + "What is 3+3?", "max_tokens": 8}),
    ("/v1/completions", {"model": "m", "prompt": "unrelated " * 40, "max_tokens": 16}),
    ("/v1/completions", {"model": "m", "prompt": PREFIX + "What is 4+4?", "max_tokens": 8}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hello"},
                                                         {"role": "assistant", "content": "hi"},
                                                         {"role": "user", "content": "how are you"}]}),
]


def _shape(eps: list[Endpoint]) -> None:
    """Distinct standing load per endpoint, so scores (not only the seeded tie-break) decide."""
    for i, e in enumerate(sorted(eps, key=lambda e: e.id)):
        e.load.in_flight_requests = (i * 3) % 4
        e.load.in_flight_kv_tokens = 100 * ((i + 1) % 4)


@pytest.mark.parametrize("policy", ["lanterna", "llm-d"])
async def test_picker_and_http_gateway_pick_the_same_endpoints(upstreams, policy: str) -> None:
    ups = [await upstreams() for _ in range(4)]
    config = {"scheduler": policy}
    gw = create_gateway(picker_config(ups, config))
    port = free_port()
    runner = await serve(build_app(gw), "127.0.0.1", port)
    http_picks, epp_picks = [], []
    try:
        async with picker_for(ups, config) as p, aiohttp.ClientSession() as http:
            _shape(gw.store.all())
            _shape(p.gw.store.all())
            for path, body in REQUESTS:
                raw = orjson.dumps(body)
                async with http.post(f"http://127.0.0.1:{port}{path}", data=raw,
                                     headers={"content-type": "application/json"}) as r:
                    assert r.status == 200
                    http_picks.append(r.headers["x-gateway-destination-endpoint"])
                    answer = await r.read()
                s = p.stream()
                await s.send(request_headers(path))
                hdr, _ = await s.exchange(request_body(raw, True), n=2)
                epp_picks.append(set_headers(hdr.request_headers.response)["x-gateway-destination-endpoint"]
                                 .split(",")[0])
                await s.exchange(response_headers(200))
                await s.exchange(response_body(answer, True))  # the same answer the gateway relayed
                await s.done()
    finally:
        await runner.cleanup()
    assert epp_picks == http_picks
    assert len(set(http_picks)) > 1  # scores and state, not one fixed endpoint, decided
