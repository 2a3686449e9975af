"""Dispatch, retries, breakers, deadlines and streaming relay against the in-memory upstream transport.

The gateway app is real; its upstream side is ``MemoryTransport`` (no sockets to model servers), so stalls,
connect errors and mid-stream deaths are scripted and awaited on events instead of timed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import pytest

from lanterna.config.model import LanternaConfig
from lanterna.gateway.app import build_app, create_gateway, serve
from lanterna.gateway.memory_transport import MemoryTransport, Scripted
from lanterna.gateway.state import Gateway
from lanterna.routing.retries import HALF_OPEN, OPEN, CircuitBreaker
from tests.conftest import free_port
from tests.unit.gateway.fake_upstream import pin_targets

# Ports nothing listens on: the gateway's own health checks fail fast (one failure < unhealthy_after).
ADDRS = ["127.0.0.1:9", "127.0.0.1:11", "127.0.0.1:13"]
BODY = {"model": "m", "prompt": "hello", "max_tokens": 2}
OK = Scripted.json(msgspec.json.encode({"id": "c", "choices": [{"text": "x"}],
                                 "usage": {"prompt_tokens": 3, "completion_tokens": 1}}))
BOOM = Scripted.json(b'{"error": {"message": "boom"}}', status=500)
FRAMES = [b'data: {"choices": [{"text": "a"}]}\n\n', b'data: {"choices": [{"text": "b"}]}\n\n',
          b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}\n\n', b"data: [DONE]\n\n"]


@dataclass
class Mem:
    gw: Gateway
    t: MemoryTransport
    http: aiohttp.ClientSession
    url: str

    async def post(self, body: Any = BODY, path: str = "/v1/completions", **kw: Any) -> aiohttp.ClientResponse:
        return await self.http.post(self.url + path, json=body, **kw)

    async def get(self, path: str) -> aiohttp.ClientResponse:
        return await self.http.get(self.url + path)

    def pin(self, *addresses: str) -> None:
        pin_targets(self.gw.scheduler, *addresses)

    def failures(self, address: str, reason: str) -> float:
        return self.gw.metrics.upstream_failures_total.labels(address, reason)._value.get()  # type: ignore[no-any-return]

    def load_is_zero(self) -> bool:
        return all(e.load.in_flight_requests == 0 and e.load.in_flight_prefill_tokens == 0 for e in self.gw.store.all())


@asynccontextmanager
async def mem_gateway(config: dict[str, Any] | None = None, n: int = 3) -> AsyncIterator[Mem]:
    tree: dict[str, Any] = {"gateway": {"timeouts": {"first_byte_s": 5.0, "connect_s": 0.5}},
                            "endpoints": {"static": [{"address": a, "models": ["m"]} for a in ADDRS[:n]],
                                          "health_interval_s": 3600, "scrape_interval_s": 3600,
                                          "scrape_timeout_s": 0.2}}
    for k, v in (config or {}).items():
        tree[k] = {**tree.get(k, {}), **v}
    t = MemoryTransport(idle_s=5)
    gw = create_gateway(LanternaConfig.model_validate(tree), transport=t)
    port = free_port()
    runner = await serve(build_app(gw), "127.0.0.1", port)  # handler cancellation on, as in production
    try:
        async with aiohttp.ClientSession() as http:
            yield Mem(gw, t, http, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


# -- pure breaker ---------------------------------------------------------------------------------------------------


def test_abandoned_probe_frees_the_slot_without_a_verdict() -> None:
    b = CircuitBreaker(failure_threshold=1, open_s=1.0)
    b.on_failure(0.0)
    assert b.state == OPEN and not b.available(0.5)
    b.begin(2.0)
    assert b.state == HALF_OPEN and not b.available(2.0)  # probe in flight
    b.abandon()
    assert b.state == HALF_OPEN and b.available(2.0)  # the next request probes


# -- retries and verdicts -------------------------------------------------------------------------------------------


async def test_4xx_goes_to_the_client_unretried_and_uncounted() -> None:
    async with mem_gateway() as h:
        h.t.script(ADDRS[0], Scripted.json(b'{"error": {"message": "bad"}}', status=400))
        h.t.script(ADDRS[1], OK)
        h.pin(ADDRS[0])
        r = await h.post()
        assert r.status == 400 and h.t.hits(ADDRS[1]) == 0
        assert h.gw.breakers.get(ADDRS[0]).failures == 0


async def test_poison_request_stops_after_two_replicas_and_opens_no_breaker() -> None:
    async with mem_gateway({"gateway": {"circuit_breaker": {"failure_threshold": 2}}}) as h:
        for a in ADDRS:
            h.t.script(a, BOOM)
        for _ in range(6):
            r = await h.post()
            assert r.status == 500  # the replicas' answer, passed through
        assert len(h.t.sent) == 12  # two replicas per request, never the third
        assert not any(h.gw.breakers.is_open(a) for a in ADDRS)
        assert all(h.gw.breakers.get(a).failures == 0 for a in ADDRS)


async def test_5xx_counts_against_the_replica_once_another_serves_the_request() -> None:
    async with mem_gateway() as h:
        h.t.script(ADDRS[0], BOOM)
        h.t.script(ADDRS[1], OK)
        h.pin(ADDRS[0], ADDRS[1])
        r = await h.post()
        assert r.status == 200 and r.headers["x-gateway-destination-endpoint"] == ADDRS[1]
        assert h.gw.breakers.get(ADDRS[0]).failures == 1 and h.failures(ADDRS[0], "http_5xx") == 1


async def test_connect_errors_everywhere_answer_502_without_internal_addresses() -> None:
    async with mem_gateway() as h:  # unscripted addresses refuse connections
        r = await h.post()
        body = await r.text()
        assert r.status == 502 and "127.0.0.1" not in body and ":9" not in body
        assert msgspec.json.decode(body)["error"]["type"] == "BadGatewayError"
        assert h.load_is_zero()


# -- half-open probe and client disconnect --------------------------------------------------------------------------


async def test_probe_cancelled_by_client_disconnect_leaves_the_replica_usable() -> None:
    async with mem_gateway({"gateway": {"circuit_breaker": {"failure_threshold": 1, "open_s": 0.01}}}) as h:
        stall, arrived, gone = asyncio.Event(), asyncio.Event(), asyncio.Event()
        h.t.script(ADDRS[0], Scripted.json(b"{}", head_gate=stall, arrived=arrived, cancelled=gone), OK)
        for a in ADDRS[1:]:
            h.t.script(a, OK)
        b = h.gw.breakers.get(ADDRS[0])
        b.on_failure(time.monotonic() - 1)  # open, and due for a probe
        h.pin(ADDRS[0])
        req = asyncio.ensure_future(h.post())
        await arrived.wait()  # the probe reached the replica ...
        req.cancel()  # ... and its client left
        with pytest.raises(asyncio.CancelledError):
            await req
        await asyncio.wait_for(gone.wait(), 5)  # the gateway's handler was cancelled and has settled
        assert not b.probe_in_flight
        assert b.state == HALF_OPEN and h.load_is_zero()
        r = await h.post()  # the next request probes the replica and closes its circuit
        assert r.status == 200 and r.headers["x-gateway-destination-endpoint"] == ADDRS[0]
        assert not h.gw.breakers.is_open(ADDRS[0])


# -- deadlines ------------------------------------------------------------------------------------------------------


async def test_all_replicas_stalled_answer_504_within_the_capped_first_byte_waits() -> None:
    async with mem_gateway({"gateway": {"timeouts": {"first_byte_s": 0.2, "first_byte_floor_s": 0.1}}}) as h:
        never = asyncio.Event()
        for a in ADDRS:
            h.t.script(a, Scripted.sse(FRAMES, head_gate=never))
        t0 = time.monotonic()
        r = await h.post({**BODY, "stream": True})
        assert r.status == 504 and (await r.json())["error"]["type"] == "GatewayTimeoutError"
        assert time.monotonic() - t0 < 2.0 and len(h.t.sent) == 3 and h.load_is_zero()


async def test_request_timeout_header_bounds_the_whole_request() -> None:
    async with mem_gateway() as h:
        never = asyncio.Event()
        for a in ADDRS:
            h.t.script(a, Scripted.sse(FRAMES, head_gate=never))
        t0 = time.monotonic()
        r = await h.post({**BODY, "stream": True}, headers={"x-request-timeout": "0.3"})
        assert r.status == 504 and time.monotonic() - t0 < 1.5
        assert len(h.t.sent) == 1  # the deadline, not three 5 s first-byte waits
        assert h.gw.breakers.get(h.t.sent[0].address).failures == 0  # the client's deadline is not the replica's fault
        bad = await h.post(headers={"x-request-timeout": "soon"})
        assert bad.status == 400


async def test_attempt_waiting_on_an_endpoint_declared_unhealthy_fails_over() -> None:
    async with mem_gateway() as h:
        arrived = asyncio.Event()
        h.t.script(ADDRS[0], Scripted.sse(FRAMES, head_gate=asyncio.Event(), arrived=arrived))
        h.t.script(ADDRS[1], Scripted.sse(FRAMES))
        h.pin(ADDRS[0], ADDRS[1])
        req = asyncio.ensure_future(h.post({**BODY, "stream": True}))
        await arrived.wait()
        ep = h.gw.store.get(ADDRS[0])
        assert ep is not None
        h.gw.store.set_healthy(ep, False)
        h.gw.health_changed(ep, False)  # what the health checker calls on the transition
        r = await asyncio.wait_for(req, 2)
        assert r.status == 200 and r.headers["x-gateway-destination-endpoint"] == ADDRS[1]
        assert await r.read() == b"".join(FRAMES)
        assert h.failures(ADDRS[0], "unhealthy") == 1


# -- streaming relay ------------------------------------------------------------------------------------------------


async def test_stream_is_relayed_unchanged_and_tokens_counted() -> None:
    async with mem_gateway() as h:
        for a in ADDRS:
            h.t.script(a, Scripted.sse(FRAMES))
        r = await h.post({**BODY, "stream": True})
        assert r.status == 200 and await r.read() == b"".join(FRAMES)
        assert h.load_is_zero()
        reply = h.t.sent[0].reply
        assert reply is not None and reply.released and not reply.closed  # reusable connection


async def test_mid_stream_death_ends_with_error_frame_and_counts_against_the_replica() -> None:
    async with mem_gateway() as h:
        for a in ADDRS:
            h.t.script(a, Scripted.sse(FRAMES, die_after=1))
        r = await h.post({**BODY, "stream": True})
        data = await r.read()
        assert r.status == 200 and data.startswith(FRAMES[0]) and b'"error"' in data and data.endswith(b"[DONE]\n\n")
        addr = h.t.sent[0].address
        assert len(h.t.sent) == 1 and h.failures(addr, "mid_stream") == 1
        reply = h.t.sent[0].reply
        assert reply is not None and reply.closed and h.load_is_zero()


# -- honest signals -------------------------------------------------------------------------------------------------


async def test_known_model_without_ready_endpoint_is_503_with_retry_after_and_ready_is_503() -> None:
    async with mem_gateway() as h:
        assert (await h.get("/ready")).status == 200
        for ep in h.gw.store.all():
            h.gw.store.set_healthy(ep, False)
        r = await h.post()
        assert r.status == 503 and r.headers["Retry-After"] and r.headers["x-llm-d-request-dropped-reason"]
        assert (await r.json())["error"]["type"] == "ServiceUnavailableError"
        assert (await h.post({**BODY, "model": "nope"})).status == 404  # unknown stays 404
        assert (await h.get("/ready")).status == 503
        assert (await h.get("/health")).status == 200  # liveness


async def test_circuit_open_gauge_follows_health_transitions() -> None:
    async with mem_gateway() as h:
        ep = h.gw.store.get(ADDRS[0])
        assert ep is not None

        async def gauge() -> str:
            text = await (await h.get("/metrics")).text()
            return next(ln for ln in text.splitlines() if ln.startswith("lanterna_gateway_circuit_open")
                        and ADDRS[0] in ln).rsplit(" ", 1)[1]

        assert await gauge() == "0.0"
        h.gw.breakers.get(ADDRS[0]).on_failure(time.monotonic())
        for _ in range(5):
            h.gw.breakers.get(ADDRS[0]).on_failure(time.monotonic())
        h.gw.store.set_healthy(ep, False)
        h.gw.health_changed(ep, False)
        assert await gauge() == "1.0"
        h.gw.store.set_healthy(ep, True)
        h.gw.health_changed(ep, True)  # recovery closes the circuit: no request probe needed
        assert await gauge() == "0.0" and not h.gw.breakers.is_open(ADDRS[0])
