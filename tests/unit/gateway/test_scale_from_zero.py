"""Scale from zero in the gateway: with ``flowcontrol.hold_models`` a request at zero ready replicas waits in flow
control (not 503 at once), asks for a replica through ``on_hold``, and dispatches when one is added; the queue TTL
answers 503 and the queue cap 429 + Retry-After. Scale-down drains: ``drain_endpoint`` waits for the requests the
endpoint is serving. Real gateway app, in-memory upstreams (``MemoryTransport``)."""

from __future__ import annotations

import asyncio
from typing import Any

from lanterna.endpoints.types import Endpoint
from lanterna.gateway.memory_transport import Scripted
from tests.unit.gateway.test_memory_dispatch import BODY, OK, mem_gateway

ADDR = "127.0.0.1:9"


async def _until(cond: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 (queue depth has no event; bounded by the timeout)
            await asyncio.sleep(0.005)


def _hold(**flow: Any) -> dict[str, Any]:
    return {"flowcontrol": {"hold_models": ["m"], **flow}}


async def test_requests_at_zero_wait_for_a_replica_then_dispatch() -> None:
    async with mem_gateway(_hold(), n=0) as m:
        asked: list[str] = []
        m.gw.on_hold = asked.append
        assert m.gw.flow is not None and m.gw.flow.core.held
        m.t.script(ADDR, OK)
        posts = [asyncio.create_task(m.post()) for _ in range(3)]
        await _until(lambda: m.gw.flow is not None and m.gw.flow.num_queued == 3)
        assert asked == ["m", "m", "m"]  # a signal per held request; the autoscaler deduplicates
        assert not any(p.done() for p in posts)
        await m.gw.add_endpoint(Endpoint(id=ADDR, address=ADDR, models=frozenset({"m"})))
        assert not m.gw.flow.core.held
        for p in posts:
            r = await p
            assert r.status == 200, await r.text()
        assert m.t.hits(ADDR) == 3
        await m.gw.remove_endpoint(ADDR)
        assert m.gw.flow.core.held  # back at zero: hold again


async def test_held_request_past_its_ttl_gets_503() -> None:
    async with mem_gateway(_hold(queue_ttl_s=0.1), n=0) as m:
        r = await m.post()
        assert r.status == 503
        body = await r.json()
        assert body["error"]["type"] and "queue TTL" in body["error"]["message"]
        assert r.headers["x-llm-d-request-dropped-reason"]
        assert m.gw.flow is not None and m.gw.flow.num_queued == 0


async def test_queue_cap_at_zero_gets_429_with_retry_after() -> None:
    async with mem_gateway(_hold(max_queue_len=1, queue_ttl_s=5.0), n=0) as m:
        first = asyncio.create_task(m.post())
        await _until(lambda: m.gw.flow is not None and m.gw.flow.num_queued == 1)
        r = await m.post()
        assert r.status == 429
        assert r.headers["Retry-After"]
        assert "queue is full" in (await r.json())["error"]["message"]
        m.t.script(ADDR, OK)
        await m.gw.add_endpoint(Endpoint(id=ADDR, address=ADDR, models=frozenset({"m"})))
        assert (await first).status == 200


async def test_without_hold_a_known_model_at_zero_answers_503_at_once() -> None:
    async with mem_gateway(n=1) as m:
        assert m.gw.flow is not None and not m.gw.flow.core.held
        m.gw.store.set_healthy(m.gw.store.all()[0], False)
        r = await m.post()
        assert r.status == 503
        assert r.headers["Retry-After"] == "5"
        assert r.headers["x-llm-d-request-dropped-reason"] == "no-ready-endpoint"


async def test_unknown_model_is_still_404_with_hold() -> None:
    async with mem_gateway(_hold(), n=0) as m:
        r = await m.post({**BODY, "model": "other"})
        assert r.status == 404


async def test_drain_waits_for_the_request_in_flight() -> None:
    async with mem_gateway(_hold(), n=1) as m:
        gate, arrived = asyncio.Event(), asyncio.Event()
        m.t.script(ADDR, Scripted(status=200, chunks=[b'{"choices": []}'], head_gate=gate, arrived=arrived))
        post = asyncio.create_task(m.post())
        await arrived.wait()
        drain = asyncio.create_task(m.gw.drain_endpoint(ADDR, timeout_s=5.0, poll_s=0.01))
        await _until(lambda: m.gw.store.get(ADDR) is None)  # no new request goes there
        assert m.gw.flow is not None and m.gw.flow.core.held
        await asyncio.sleep(0.05)
        assert not drain.done()
        gate.set()
        assert (await post).status == 200
        assert await drain == 0


async def test_hold_needs_flow_control() -> None:
    async with mem_gateway({"flowcontrol": {"enabled": False, "hold_models": ["m"]}}, n=0) as m:
        r = await m.post()
        assert r.status == 503  # nowhere to wait: the old answer
