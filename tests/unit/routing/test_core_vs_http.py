"""The routing core without aiohttp picks what the HTTP gateway picks, for the same request and state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import grimp
import msgspec
import pytest

from lanterna.config.model import LanternaConfig
from lanterna.endpoints.types import Endpoint
from lanterna.gateway.app import build_app, create_gateway, serve
from lanterna.gateway.memory_transport import MemoryTransport, Scripted
from lanterna.routing import core
from lanterna.routing.state import RoutingState
from tests.conftest import free_port

SRC = Path(__file__).resolve().parents[3] / "src"
ADDRS = ["127.0.0.1:9", "127.0.0.1:11", "127.0.0.1:13", "127.0.0.1:15"]
OK = Scripted.json(b'{"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}')


def _config() -> LanternaConfig:
    return LanternaConfig.model_validate({
        "scheduler": "lanterna", "gateway": {"seed": 11},
        "endpoints": {"static": [{"address": a, "models": ["m"]} for a in ADDRS],
                      "health_interval_s": 3600, "scrape_interval_s": 3600, "scrape_timeout_s": 0.2}})


def _shape(eps: list[Endpoint]) -> None:
    """Distinct load per endpoint, so the pick is decided by scores, not only by the seeded tie-break."""
    for i, e in enumerate(eps):
        e.load.in_flight_requests = (i * 3) % 4
        e.load.in_flight_kv_tokens = 100 * ((i + 1) % 4)


REQUESTS = [
    ("completions", {"model": "m", "prompt": "the quick brown fox " * 20, "max_tokens": 8}),
    ("chat", {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}),
    ("completions", {"model": "m", "prompt": "the quick brown fox " * 20 + "jumps", "max_tokens": 8}),
]


async def _core_picks(state: RoutingState) -> list[str]:
    picks = []
    for kind, body in REQUESTS:
        call = core.prepare(state, {}, msgspec.json.encode(body), kind, request_id=f"r{len(picks)}")  # type: ignore[arg-type]
        async with core.admit(state, call):
            await core.tokenize(state, call)
            order = core.schedule(state, call)
        call.endpoint, call.status = order[0], 200  # what the transport would report back
        core.complete(state, call)
        picks.append(order[0].id)
    return picks


async def test_core_steps_without_http_pick_what_the_gateway_picks() -> None:
    direct = create_gateway(_config())  # never served: only the transport-free steps run on it
    _shape(direct.store.all())
    want = await _core_picks(direct)

    t = MemoryTransport()
    for a in ADDRS:
        t.script(a, OK)
    gw = create_gateway(_config(), transport=t)
    _shape(gw.store.all())
    port = free_port()
    runner = await serve(build_app(gw), "127.0.0.1", port)
    got = []
    try:
        async with aiohttp.ClientSession() as http:
            for kind, body in REQUESTS:
                path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
                async with http.post(f"http://127.0.0.1:{port}{path}", json=body) as r:
                    assert r.status == 200
                    got.append(r.headers["x-gateway-destination-endpoint"])
    finally:
        await runner.cleanup()
    assert got == want
    assert len(set(want)) > 1 or want[0] != ADDRS[0]  # scores, not insertion order, decided


def test_routing_core_does_not_import_aiohttp() -> None:
    code = ("import sys, lanterna.routing.core, lanterna.routing.state; "
            "bad = [m for m in ('aiohttp', 'httptools', 'uvloop', 'zmq') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(SRC)})


def _cycle(graph: grimp.ImportGraph, modules: set[str]) -> list[str] | None:
    """A cycle among ``modules`` (direct imports only, TYPE_CHECKING ones included), or None."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = 1
        stack.append(m)
        for n in sorted(graph.find_modules_directly_imported_by(m) & modules):
            if colour.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in colour and (found := visit(n)):
                return found
        stack.pop()
        colour[m] = 2
        return None

    for m in sorted(modules):
        if m not in colour and (found := visit(m)):
            return found
    return None


@pytest.mark.parametrize("package", ["lanterna.gateway", "lanterna.routing"])
def test_no_import_cycle_inside(package: str) -> None:
    graph = grimp.build_graph("lanterna")
    assert _cycle(graph, graph.find_descendants(package) | {package}) is None
