"""Gateway test harness: the real gateway app on loopback in front of in-process fake upstreams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from lanterna.config.model import LanternaConfig
from lanterna.gateway.app import Gateway, build_app, create_gateway, serve
from tests.conftest import free_port
from tests.unit.gateway.fake_upstream import FakeUpstream
from tests.unit.gateway.fake_upstream import upstreams as upstreams  # shared fixture


@dataclass
class Harness:
    gw: Gateway
    url: str
    http: aiohttp.ClientSession

    async def post(self, path: str, body: Any, **kw: Any) -> aiohttp.ClientResponse:
        data = body if isinstance(body, bytes | str) else None
        return await self.http.post(self.url + path, data=data, json=None if data is not None else body, **kw)

    async def load(self) -> dict[str, dict[str, int]]:
        async with self.http.get(self.url + "/debug/endpoints") as r:
            return {e["id"]: e["load"] for e in (await r.json())["endpoints"]}


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@asynccontextmanager
async def gateway_for(upstreams: list[FakeUpstream], config: dict[str, Any] | None = None,
                      static_models: bool = True) -> AsyncIterator[Harness]:
    tree = {
        "gateway": {"timeouts": {"first_byte_s": 5.0, "connect_s": 1.0}, "log_format": "text"},
        "auth": {"open_admin": True},  # the harness reads /debug/endpoints (admin routes are 404 by default)
        "endpoints": {"static": [{"address": u.address, "models": u.models if static_models else []}
                                 for u in upstreams], "health_interval_s": 0.2},
    }
    cfg = LanternaConfig.model_validate(_deep_merge(tree, config or {}))
    gw = create_gateway(cfg)
    app: web.Application = build_app(gw)
    port = free_port()
    runner = await serve(app, "127.0.0.1", port)
    try:
        async with aiohttp.ClientSession() as http:
            yield Harness(gw, f"http://127.0.0.1:{port}", http)
    finally:
        await runner.cleanup()

