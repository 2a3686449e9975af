"""A tiny in-process OpenAI-style SSE server for runner tests; the model name picks a behaviour."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

COUNT = web.AppKey("count", list)


def _chunk(text: str, finish: str | None = None) -> bytes:
    obj = {"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": finish}]}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model, n = body["model"], int(body["max_tokens"])
    if model == "err500" or (model == "flaky" and request.app[COUNT][0] % 2 == 1):
        request.app[COUNT][0] += 1
        return web.json_response({"error": {"message": "boom", "type": "InternalServerError", "code": 500}}, status=500)
    request.app[COUNT][0] += 1
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    for i in range(n):
        if model == "disconnect" and i == 1:
            request.transport.close()  # type: ignore[union-attr]
            return resp
        await resp.write(_chunk(" tok", "length" if i == n - 1 else None))
        await asyncio.sleep(0)
    if model == "errframe":
        await resp.write(b'data: {"error": {"message": "x", "code": 500}}\n\n')
    usage = {"prompt_tokens": 11, "completion_tokens": n, "total_tokens": 11 + n,
             "prompt_tokens_details": {"cached_tokens": 4}}
    await resp.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    return resp


def make_app() -> web.Application:
    app = web.Application()
    app[COUNT] = [0]
    app.router.add_post("/v1/completions", completions)
    return app
