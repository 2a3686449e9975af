"""A tiny model server that shows what the gateway forwards: ``python -m tests.integration.echo_upstream --port P``.

(Collected by pytest but holds no tests.) It serves what the gateway needs to route to it (``/v1/models``,
``/health``, ``/metrics``) and answers ``/v1/completions`` and ``/v1/chat/completions`` with a valid OpenAI
body plus an ``echo`` object: the headers and body it received and the arrival number (``seq``), so a test
can see which headers reached a replica and in which order the gateway dispatched.

A request whose body contains ``hold`` waits until ``POST /release``; ``GET /held`` says how many are waiting
(tests use it to know a request reached the replica). A held stream sends its first chunk before waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

MODEL = "tiny"


class Echo:
    def __init__(self) -> None:
        self.seq = 0
        self.held = 0
        self.release = asyncio.Event()

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{
            "id": MODEL, "object": "model", "created": 0, "owned_by": "echo", "root": MODEL, "parent": None,
            "max_model_len": 2048}]})

    async def empty(self, _: web.Request) -> web.Response:
        return web.Response(text="")

    async def held_count(self, _: web.Request) -> web.Response:
        return web.json_response({"held": self.held})

    async def do_release(self, _: web.Request) -> web.Response:
        self.release.set()
        return web.json_response({"released": True})

    async def _hold(self) -> None:
        self.held += 1
        try:
            await self.release.wait()
        finally:
            self.held -= 1

    async def complete(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.seq += 1
        echo = {"seq": self.seq, "headers": dict(request.headers), "body": raw.decode("utf-8", "replace")}
        try:
            stream = bool(json.loads(raw).get("stream"))
        except (ValueError, AttributeError):
            stream = False
        hold = b"hold" in raw
        chat = request.path.endswith("/chat/completions")
        if not stream:
            if hold:
                await self._hold()
            choice = ({"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "length"}
                      if chat else {"index": 0, "text": "ok", "finish_reason": "length", "logprobs": None})
            return web.json_response({
                "id": f"echo-{self.seq}", "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()), "model": MODEL, "choices": [choice],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}, "echo": echo})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)

        def frame(text: str, finish: str | None) -> bytes:
            choice = ({"index": 0, "delta": {"content": text}, "finish_reason": finish} if chat
                      else {"index": 0, "text": text, "finish_reason": finish, "logprobs": None})
            obj = {"id": f"echo-{self.seq}", "object": "chat.completion.chunk" if chat else "text_completion",
                   "created": int(time.time()), "model": MODEL, "choices": [choice]}
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        await resp.write(frame("first", None))
        if hold:
            await self._hold()
        await resp.write(frame("last", "length"))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def build_app() -> web.Application:
    echo = Echo()
    app = web.Application()
    app.router.add_get("/v1/models", echo.models)
    app.router.add_get("/health", echo.empty)
    app.router.add_get("/metrics", echo.empty)
    app.router.add_get("/held", echo.held_count)
    app.router.add_post("/release", echo.do_release)
    app.router.add_post("/v1/completions", echo.complete)
    app.router.add_post("/v1/chat/completions", echo.complete)
    return app


@dataclass
class EchoProc:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def held(self) -> int:
        with urllib.request.urlopen(f"http://{self.address}/held", timeout=5) as r:
            return int(json.loads(r.read())["held"])

    def release(self) -> None:
        req = urllib.request.Request(f"http://{self.address}/release", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()

    def wait_held(self, n: int, timeout_s: float = 20.0) -> None:
        """Until ``n`` requests are held here (they reached the replica)."""
        deadline = time.monotonic() + timeout_s
        while self.held() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} held requests not seen within {timeout_s}s")
            time.sleep(0.02)


@contextlib.contextmanager
def start_echo(log_dir: Path, port: int) -> Iterator[EchoProc]:
    """The echo server as its own process on ``port``, until the block ends."""
    with open(log_dir / f"echo-{port}.log", "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "tests.integration.echo_upstream", "--port", str(port)],
                                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                cwd=Path(__file__).resolve().parents[2])
    e = EchoProc(port, proc)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                e.held()
                break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"echo upstream did not start:\n{(log_dir / f'echo-{port}.log').read_text()}") from None
                time.sleep(0.05)
        yield e
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    web.run_app(build_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
