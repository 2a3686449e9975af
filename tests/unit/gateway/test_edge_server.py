"""The edge server over real sockets: slow headers/bodies are cut off, oversized headers get 431 JSON,
protocol errors never echo the client's bytes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest
from aiohttp import web

from lanterna.config.model import EdgeLimitsConfig
from lanterna.gateway.edge import BodyLimits, read_body
from lanterna.gateway.middleware import error_middleware
from lanterna.gateway.server import serve_edge
from tests.conftest import free_port

HEADER_S = 0.3
BODY_S = 0.3
LIMITS = EdgeLimitsConfig(header_timeout_s=HEADER_S, body_timeout_s=BODY_S, lingering_s=0.2, max_headers=20,
                          max_field_size=1024, max_line_size=1024)


@dataclass
class Server:
    port: int

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async def echo(request: web.Request) -> web.Response:
        body = await read_body(request, BodyLimits(body_timeout_s=BODY_S))
        return web.json_response({"len": len(body)})

    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/echo", echo)
    port = free_port()
    runner = await serve_edge(app, "127.0.0.1", port, LIMITS)
    try:
        yield Server(port)
    finally:
        await runner.cleanup()


async def read_until_closed(reader: asyncio.StreamReader, within_s: float) -> tuple[bytes, float]:
    """Everything the server sends before closing, and how long it took to close."""
    t0 = time.perf_counter()
    data = await asyncio.wait_for(reader.read(), within_s)
    return data, time.perf_counter() - t0


def status_of(raw: bytes) -> int:
    """Status of a raw response (aiohttp answers parse errors as HTTP/1.0)."""
    assert raw[:7] == b"HTTP/1."
    return int(raw[9:12])


def json_body(raw: bytes) -> dict[str, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    return orjson.loads(body)  # type: ignore[no-any-return]


async def test_half_sent_headers_are_closed_with_408(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Le")
    raw, took = await read_until_closed(reader, 5)
    assert status_of(raw) == 408
    assert json_body(raw)["error"]["code"] == 408
    assert HEADER_S * 0.8 < took < HEADER_S + 2
    writer.close()


async def test_trickled_headers_do_not_extend_the_deadline(server: Server) -> None:
    reader, writer = await server.connect()

    async def trickle() -> None:
        for b in b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 500:
            writer.write(bytes([b]))
            await asyncio.sleep(0.02)  # a slowloris client: one byte every 20 ms, never finishing

    task = asyncio.create_task(trickle())
    try:
        raw, took = await read_until_closed(reader, 5)
    finally:
        task.cancel()
    assert status_of(raw) == 408 and took < HEADER_S + 2
    writer.close()


async def test_silent_connection_is_closed_without_a_response(server: Server) -> None:
    reader, writer = await server.connect()
    raw, took = await read_until_closed(reader, 5)
    assert raw == b"" and took < HEADER_S + 2
    writer.close()


async def test_many_slow_connections_are_all_closed(server: Server) -> None:
    conns = [await server.connect() for _ in range(100)]
    for _, w in conns:
        w.write(b"GET /echo HTTP/1.1\r\n")
    results = await asyncio.gather(*(read_until_closed(r, 5) for r, _ in conns))
    assert all(status_of(raw) == 408 for raw, _ in results)
    for _, w in conns:
        w.close()


async def test_kept_alive_connection_then_half_request_is_closed(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 200")
    await asyncio.wait_for(reader.readuntil(b'{"len": 2}'), 5)
    writer.write(b"POST /echo HTTP/1.1\r\nHo")
    raw, took = await read_until_closed(reader, 5)
    assert status_of(raw) == 408 and took < HEADER_S + 2
    writer.close()


async def test_half_sent_body_gets_408_and_is_closed(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\": ")
    raw, took = await read_until_closed(reader, 5)
    assert status_of(raw) == 408
    assert json_body(raw)["error"]["param"] == "body"
    assert took < BODY_S + LIMITS.lingering_s + 2
    writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"s3cr3t" * 400 + b"\r\n\r\n",
     b"GET /echo HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: s3cr3t\r\n" % i for i in range(50)) + b"\r\n"],
    ids=["header-too-long", "too-many-headers"],
)
async def test_oversized_headers_get_431_json(server: Server, request_bytes: bytes) -> None:
    reader, writer = await server.connect()
    writer.write(request_bytes)
    raw, _ = await read_until_closed(reader, 5)
    assert status_of(raw) == 431
    err = json_body(raw)["error"]
    assert (err["code"], err["type"]) == (431, "BadRequestError")
    assert b"s3cr3t" not in raw  # never echoes the client's bytes
    writer.close()


async def test_garbage_gets_400_json_without_echo(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(b"\x16\x03\x01 s3cr3t not http\r\n\r\n")
    raw, _ = await read_until_closed(reader, 5)
    assert status_of(raw) == 400 and b"s3cr3t" not in raw
    assert json_body(raw)["error"]["code"] == 400
    writer.close()


@pytest.mark.parametrize(("request_line", "status"), [(b"GET /nope", 404), (b"GET /echo", 405)], ids=["404", "405"])
async def test_unknown_path_and_method_are_openai_shaped(server: Server, request_line: bytes, status: int) -> None:
    reader, writer = await server.connect()
    writer.write(request_line + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw, _ = await read_until_closed(reader, 5)
    assert status_of(raw) == status
    assert json_body(raw)["error"]["code"] == status
    writer.close()
