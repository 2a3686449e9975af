"""Retries before the first byte, first-byte timeouts and the circuit breaker, through the real gateway."""

from __future__ import annotations

import socket

import pytest

from lanterna.config.model import LanternaConfig
from lanterna.gateway.app import create_gateway
from tests.unit.gateway.conftest import gateway_for

BODY = {"model": "m", "prompt": "hello", "max_tokens": 2}


def _pin_first(h, first_address: str) -> None:
    """Make the scheduler's pick deterministic: the bad endpoint first, so failover is exercised."""
    sched = h.gw.scheduler
    real = sched.schedule

    def schedule(req, cands):
        res = real(req, cands)
        bad = [e for e in cands if e.address == first_address]
        res.primary.targets[:] = bad + [e for e in res.primary.targets if e.address != first_address]
        return res

    sched.schedule = schedule


@pytest.mark.parametrize("mode", ["status", "stall"], ids=["http-500", "stalled-replica"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_failure_before_first_byte_is_served_elsewhere(upstreams, mode: str, stream: bool) -> None:
    bad = await upstreams(mode=mode)
    good = await upstreams()
    cfg = {"gateway": {"timeouts": {"first_byte_s": 0.3}}}
    async with gateway_for([bad, good], cfg) as h:
        _pin_first(h, bad.address)
        r = await h.post("/v1/completions", {**BODY, "stream": stream})
        assert r.status == 200
        assert r.headers["x-gateway-destination-endpoint"] == good.address
        await r.read()
        assert bad.hits == 1 and good.hits == 1
        load = await h.load()
        assert all(v["in_flight_requests"] == 0 for v in load.values())


async def test_connect_refused_fails_over(upstreams) -> None:
    good = await upstreams()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    cfg = {"endpoints": {"static": [{"address": dead, "models": ["m"]}, {"address": good.address, "models": ["m"]}]}}
    async with gateway_for([], cfg) as h:
        _pin_first(h, dead)
        r = await h.post("/v1/completions", BODY)
        assert r.status == 200 and r.headers["x-gateway-destination-endpoint"] == good.address


async def test_all_endpoints_failing_returns_upstream_error_without_hanging(upstreams) -> None:
    a = await upstreams(mode="stall")
    b = await upstreams(mode="stall")
    async with gateway_for([a, b], {"gateway": {"timeouts": {"first_byte_s": 0.2}}}) as h:
        r = await h.post("/v1/completions", BODY)
        assert r.status == 504
        assert (await r.json())["error"]["type"] == "GatewayTimeoutError"


async def test_4xx_from_upstream_is_passed_through_not_retried(upstreams) -> None:
    a = await upstreams(mode="status", status=400)
    b = await upstreams()
    async with gateway_for([a, b]) as h:
        _pin_first(h, a.address)
        r = await h.post("/v1/completions", BODY)
        assert r.status == 400 and b.hits == 0


async def test_circuit_opens_after_consecutive_failures_and_skips_endpoint(upstreams) -> None:
    bad = await upstreams(mode="status", status=503)
    good = await upstreams()
    cfg = {"gateway": {"circuit_breaker": {"failure_threshold": 2, "open_s": 60}}}
    async with gateway_for([bad, good], cfg) as h:
        _pin_first(h, bad.address)
        for _ in range(2):
            assert (await h.post("/v1/completions", BODY)).status == 200
        assert bad.hits == 2
        assert h.gw.breakers.is_open(bad.address)
        for _ in range(3):
            assert (await h.post("/v1/completions", BODY)).status == 200
        assert bad.hits == 2  # skipped while open
        assert good.hits == 5


def test_gateway_builds_without_endpoints() -> None:
    gw = create_gateway(LanternaConfig())
    assert len(gw.store) == 0 and not gw.pool_saturated()


@pytest.fixture
def connect_hangs():
    """An address whose TCP connect never completes: a listener with a full backlog that never accepts
    (the kernel drops further SYNs, as under a burst of new connections)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fill = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fill.append(c)
    yield f"127.0.0.1:{port}"
    for c in (*fill, srv):
        c.close()


async def test_connect_timeout_is_its_own_error_and_fails_over(upstreams, connect_hangs: str) -> None:
    good = await upstreams()
    cfg = {"gateway": {"timeouts": {"connect_s": 0.2, "first_byte_s": 30.0}},
           "endpoints": {"scrape_timeout_s": 0.2,
                         "static": [{"address": connect_hangs, "models": ["m"]}, {"address": good.address, "models": ["m"]}]}}
    async with gateway_for([], cfg) as h:
        _pin_first(h, connect_hangs)
        r = await h.post("/v1/completions", {**BODY, "stream": True})
        assert r.status == 200 and r.headers["x-gateway-destination-endpoint"] == good.address
        assert (await r.read()).endswith(b"data: [DONE]\n\n")
        failures = h.gw.metrics.upstream_failures_total.labels(connect_hangs, "connect")._value.get()
        assert failures == 1


async def test_connect_timeout_everywhere_says_connect_not_first_byte(connect_hangs: str) -> None:
    cfg = {"gateway": {"timeouts": {"connect_s": 0.2, "first_byte_s": 30.0}},
           "endpoints": {"scrape_timeout_s": 0.2, "static": [{"address": connect_hangs, "models": ["m"]}]}}
    async with gateway_for([], cfg) as h:
        r = await h.post("/v1/completions", BODY)
        err = (await r.json())["error"]
        assert r.status == 502 and err["type"] == "BadGatewayError"
        assert "could not connect" in err["message"] and "0.2s" in err["message"]
