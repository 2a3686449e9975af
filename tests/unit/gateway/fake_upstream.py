"""An in-process stand-in for a vLLM server, with failure modes the gateway must survive.

Implements the model-server interface the gateway uses (``/health``, ``/v1/models``, ``/metrics``,
the two inference routes) so gateway tests need no real processes. ``hold`` pauses every stream after
its first chunk until the test sets it, which lets a test look at the gateway's load mid-stream
without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class FakeUpstream:
    models: list[str] = field(default_factory=lambda: ["m"])
    parents: dict[str, str] = field(default_factory=dict)  # adapter -> base model
    mode: str = "ok"  # ok | status | stall | die
    status: int = 500
    num_chunks: int = 3
    hold: asyncio.Event | None = None
    hits: int = 0
    bodies: list[dict] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    aborted: int = 0
    waiting: int = 0
    server: TestServer | None = None

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.port}"

    async def start(self) -> FakeUpstream:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/completions", self._infer)
        app.router.add_post("/v1/chat/completions", self._infer)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self.server is not None:
            await self.server.close()

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response()

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "parent": self.parents.get(m), "max_model_len": 2048} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _metrics(self, request: web.Request) -> web.Response:
        name = self.models[0]
        text = (f'vllm:num_requests_running{{engine="0",model_name="{name}"}} 1.0\n'
                f'vllm:num_requests_waiting{{engine="0",model_name="{name}"}} {self.waiting}.0\n'
                f'vllm:kv_cache_usage_perc{{engine="0",model_name="{name}"}} 0.25\n'
                f'vllm:cache_config_info{{block_size="16",engine="0",num_gpu_blocks="100"}} 1.0\n')
        return web.Response(text=text)

    async def _infer(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        body = msgspec.json.decode(await request.read())
        self.bodies.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        if self.mode == "stall":
            await asyncio.Event().wait()
        if self.mode == "status":
            return web.json_response({"error": {"message": "boom", "type": "InternalServerError", "param": None,
                                                 "code": self.status}}, status=self.status)
        model = body.get("model")
        usage = {"prompt_tokens": 7, "completion_tokens": self.num_chunks, "total_tokens": 7 + self.num_chunks,
                 "prompt_tokens_details": {"cached_tokens": 3}}
        if not body.get("stream"):
            return web.json_response({"id": "cmpl-1", "object": "text_completion", "model": model,
                                      "choices": [{"index": 0, "text": "abc", "finish_reason": "length"}],
                                      "usage": usage, "kv_transfer_params": {"remote_block_ids": [1, 2]}
                                      if body.get("kv_transfer_params") else None})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)
        try:
            for i in range(self.num_chunks):
                chunk = {"id": "cmpl-1", "model": model, "choices": [{"index": 0, "text": f"t{i}"}]}
                await resp.write(b"data: " + msgspec.json.encode(chunk) + b"\n\n")
                if i == 0 and self.hold is not None:
                    await self.hold.wait()
                if i == 0 and self.mode == "die":
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
            await resp.write(b"data: " + msgspec.json.encode({"id": "cmpl-1", "choices": [], "usage": usage}) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.aborted += 1
            raise
        return resp


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[..., Any]]:
    """Factory of started ``FakeUpstream``s, all closed at teardown (shared by the gateway and epp conftests)."""
    made: list[FakeUpstream] = []

    async def make(**kw: Any) -> FakeUpstream:
        u = await FakeUpstream(**kw).start()
        made.append(u)
        return u

    yield make
    for u in made:
        await u.close()


def pin_targets(scheduler: Any, *addresses: str) -> None:
    """Attempt order = ``addresses`` (then the rest), whatever the scheduler scores."""
    real = scheduler.schedule

    def schedule(req: Any, cands: Any) -> Any:
        res = real(req, cands)
        first = [e for a in addresses for e in cands if e.address == a]
        res.primary.targets[:] = first + [e for e in res.primary.targets if e not in first]
        return res

    scheduler.schedule = schedule
