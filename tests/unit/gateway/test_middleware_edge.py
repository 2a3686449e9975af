"""Auth middleware, require_admin and graceful drain on a small app served over loopback: every test runs
against the gateway's one merged middleware (``gateway.front``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from lanterna.auth import effective_fairness, effective_priority
from lanterna.auth.keys import hash_key
from lanterna.clock import VirtualClock
from lanterna.config.model import ApiKeySpec, AuthConfig, EdgeLimitsConfig
from lanterna.gateway.auth import AUTH, EdgeAuth, principal_of, require_admin
from lanterna.gateway.front import edge_middleware
from lanterna.gateway.server import SHUTDOWN, Shutdown, serve_edge
from tests.conftest import free_port

CLIENT, ADMIN = "lk-client", "lk-admin"


@dataclass
class App:
    url: str
    http: aiohttp.ClientSession
    release: asyncio.Event
    entered: asyncio.Event
    shutdown: Shutdown


@asynccontextmanager
async def edge_app(auth_cfg: AuthConfig, clock: VirtualClock | None = None) -> AsyncIterator[App]:
    release, entered = asyncio.Event(), asyncio.Event()

    async def infer(request: web.Request) -> web.Response:
        p = principal_of(request)
        return web.json_response({
            "tenant": effective_fairness(request.headers.get("x-gateway-inference-fairness-id"), p),
            "priority": effective_priority(request.headers.get("x-gateway-inference-objective"), {"gold": 9}, p)})

    async def hold(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.json_response({"ok": True})

    async def debug(request: web.Request) -> web.Response:
        return web.json_response({"secret": "endpoints"})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    shutdown = Shutdown(retry_after_s=3)
    auth = EdgeAuth.from_config(auth_cfg, clock=clock, environ={})
    app = web.Application(middlewares=[edge_middleware(shutdown, auth)])
    app[AUTH] = auth
    app[SHUTDOWN] = shutdown
    app.router.add_post("/v1/completions", infer)
    app.router.add_post("/v1/hold", hold)
    app.router.add_get("/debug/endpoints", require_admin(debug))
    app.router.add_get("/metrics", require_admin(debug, unconfigured="open"))
    app.router.add_get("/health", health)
    port = free_port()
    runner = await serve_edge(app, "127.0.0.1", port, EdgeLimitsConfig())
    try:
        async with aiohttp.ClientSession() as http:
            yield App(f"http://127.0.0.1:{port}", http, release, entered, shutdown)
    finally:
        release.set()
        await runner.cleanup()


def keyed(**limits: float) -> AuthConfig:
    return AuthConfig(enabled=True, admin_keys=[hash_key(ADMIN)],
                      keys=[ApiKeySpec(hash=hash_key(CLIENT), tenant="acme", max_priority=5, **limits)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"authorization": "Bearer nope"}, 401), ({"authorization": f"Bearer {ADMIN}"}, 401),
     ({"authorization": f"Bearer {CLIENT}"}, 200), ({"x-api-key": CLIENT}, 200)],
    ids=["missing", "wrong", "admin-key-is-not-a-client-key", "bearer", "x-api-key"],
)
async def test_client_routes_need_a_valid_key(headers: dict[str, str], status: int) -> None:
    async with edge_app(keyed()) as a, a.http.post(a.url + "/v1/completions", headers=headers, json={}) as r:
        body = await r.json()
        assert r.status == status
        if status == 401:
            assert r.headers["www-authenticate"] == "Bearer"
            assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "invalid_api_key"
            assert set(body["error"]) == {"message", "type", "param", "code"}


async def test_priority_and_fairness_follow_the_key() -> None:
    headers = {"x-api-key": CLIENT, "x-gateway-inference-objective": "999999",
               "x-gateway-inference-fairness-id": "other-tenant"}
    async with edge_app(keyed()) as a, a.http.post(a.url + "/v1/completions", headers=headers, json={}) as r:
        assert await r.json() == {"tenant": "acme/other-tenant", "priority": 5}


async def test_open_mode_caps_client_priority() -> None:
    headers = {"x-gateway-inference-objective": "999999"}
    async with edge_app(AuthConfig()) as a, a.http.post(a.url + "/v1/completions", headers=headers, json={}) as r:
        assert (r.status, (await r.json())["priority"]) == (200, 0)


async def test_rate_limit_holds_under_concurrent_load() -> None:
    """50 concurrent requests, one key at 5 req/s with burst 5, frozen clock: exactly the burst gets through."""
    clock = VirtualClock()
    async with edge_app(keyed(requests_per_s=5, burst=5), clock=clock) as a:

        async def one() -> tuple[int, str | None]:
            async with a.http.post(a.url + "/v1/completions", headers={"x-api-key": CLIENT}, json={}) as r:
                await r.read()
                return r.status, r.headers.get("retry-after")

        results = await asyncio.gather(*(one() for _ in range(50)))
        assert sorted(s for s, _ in results).count(200) == 5
        assert {(s, ra) for s, ra in results if s != 200} == {(429, "1")}
        clock.advance(0.4)  # 2 more tokens
        again = await asyncio.gather(*(one() for _ in range(10)))
        assert [s for s, _ in again].count(200) == 2


@pytest.mark.parametrize(
    ("cfg", "path", "headers", "status"),
    [
        (AuthConfig(), "/debug/endpoints", {}, 404),
        (AuthConfig(open_admin=True), "/debug/endpoints", {}, 200),
        (AuthConfig(), "/metrics", {}, 200),
        (keyed(), "/debug/endpoints", {}, 401),
        (keyed(), "/debug/endpoints", {"x-api-key": CLIENT}, 401),
        (keyed(), "/debug/endpoints", {"authorization": f"Bearer {ADMIN}"}, 200),
        (keyed(), "/metrics", {}, 401),
        (keyed(), "/metrics", {"authorization": f"Bearer {ADMIN}"}, 200),
    ],
    ids=["off-by-default", "open-admin", "metrics-open-by-default", "needs-admin", "client-key-refused",
         "admin-key", "metrics-needs-admin", "metrics-admin"],
)
async def test_require_admin(cfg: AuthConfig, path: str, headers: dict[str, str], status: int) -> None:
    async with edge_app(cfg) as a, a.http.get(a.url + path, headers=headers) as r:
        body = await r.json()
        assert r.status == status
        assert ("error" in body) == (status != 200)


async def _drain_case(a: App, timeout_s: float, finish: Callable[[], None]) -> tuple[int, int]:
    held = asyncio.create_task(a.http.post(a.url + "/v1/hold", json={}))
    await a.entered.wait()
    drain = asyncio.create_task(a.shutdown.drain(timeout_s))
    await asyncio.sleep(0)  # let drain flip the flag
    async with a.http.post(a.url + "/v1/completions", json={}) as r:
        assert r.status == 503 and r.headers["retry-after"] == "3" and r.headers["connection"] == "close"
    async with a.http.get(a.url + "/health") as r:
        assert r.status == 200  # probes still answered while draining
    finish()
    remaining = await drain
    a.release.set()  # after a deadline the held request still finishes before the app closes
    resp = await held
    status = resp.status
    resp.release()
    return remaining, status


async def test_drain_waits_for_in_flight_requests() -> None:
    async with edge_app(AuthConfig()) as a:
        remaining, status = await _drain_case(a, 10.0, a.release.set)
        assert (remaining, status, a.shutdown.in_flight) == (0, 200, 0)


async def test_drain_gives_up_at_its_deadline() -> None:
    async with edge_app(AuthConfig()) as a:
        remaining, status = await _drain_case(a, 0.2, lambda: None)
        assert (remaining, status) == (1, 200)
