"""The lean front (``gateway/lean.py``) over raw sockets, in front of a fake vLLM: framing the aiohttp edge got from
aiohttp (pipelining, chunked bodies, ``Expect``, HTTP/1.0, keep-alive) and the edge limits on the hot routes
(header/body deadlines, 431, 413 after decompression, 415, 400 without echo), plus the cold routes it hands to the
aiohttp app on the same connection."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from tests.unit.gateway.conftest import Harness, gateway_for
from tests.unit.gateway.fake_upstream import FakeUpstream

HEADER_S = 0.3
BODY_S = 0.3
LIMITS = {"header_timeout_s": HEADER_S, "body_timeout_s": BODY_S, "keepalive_timeout_s": 0.5, "max_headers": 20,
          "max_field_size": 1024, "max_line_size": 1024}
BODY = b'{"model": "m", "prompt": "hi", "max_tokens": 3}'


@pytest.fixture
async def gw(upstreams: Callable[..., Any]) -> AsyncIterator[Harness]:
    up: FakeUpstream = await upstreams()
    async with gateway_for([up], {"gateway": {"limits": LIMITS, "max_body_bytes": 64 * 1024}}) as h:
        yield h


async def connect(h: Harness) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = h.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


def post(body: bytes = BODY, path: bytes = b"/v1/completions", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s" % (
        path, extra, len(body), body)


async def response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One complete response (content-length or chunked) off a kept-alive connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if "content-length" in hdrs:
        return status, hdrs, await reader.readexactly(int(hdrs["content-length"]))
    if hdrs.get("transfer-encoding") == "chunked":
        out = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return status, hdrs, out
            out += data[:-2]
    return status, hdrs, await reader.read()


async def until_closed(reader: asyncio.StreamReader, within_s: float = 5) -> tuple[bytes, float]:
    t0 = time.perf_counter()
    return await asyncio.wait_for(reader.read(), within_s), time.perf_counter() - t0


def status_of(raw: bytes) -> int:
    assert raw[:7] == b"HTTP/1.", raw[:40]
    return int(raw[9:12])


def error_of(raw: bytes) -> dict[str, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    return msgspec.json.decode(body)["error"]  # type: ignore[no-any-return]


async def test_the_gateway_is_served_by_the_lean_front(gw: Harness) -> None:
    assert gw.gw.cfg.gateway.http_server == "lean"
    r, w = await connect(gw)
    w.write(post())
    status, hdrs, body = await response(r)
    assert status == 200 and msgspec.json.decode(body)["choices"][0]["text"] == "abc"
    assert hdrs["x-request-id"] and "date" in hdrs and "connection" not in hdrs
    w.close()


async def test_pipelined_requests_are_answered_in_order_on_one_connection(gw: Harness) -> None:
    r, w = await connect(gw)
    stream = b'{"model": "m", "prompt": "s", "stream": true}'
    w.write(post(extra=b"x-request-id: one\r\n") + post(stream, extra=b"x-request-id: two\r\n")
            + b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-request-id: three\r\n\r\n"
            + b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" + post(extra=b"x-request-id: five\r\n"))
    got = [await response(r) for _ in range(5)]
    assert [s for s, _, _ in got] == [200] * 5
    assert [h.get("x-request-id") for _, h, _ in got[:3]] == ["one", "two", "three"]
    assert got[1][1]["transfer-encoding"] == "chunked" and got[1][2].endswith(b"data: [DONE]\n\n")
    assert b"lanterna_gateway" in got[3][2] or b"inference_" in got[3][2]  # /metrics: the aiohttp app's answer
    assert got[4][1]["x-request-id"] == "five"  # the connection survived the cold route
    w.close()


async def test_cold_routes_keep_their_aiohttp_answers(gw: Harness) -> None:
    r, w = await connect(gw)
    w.write(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    status, hdrs, body = await response(r)
    assert status == 404 and msgspec.json.decode(body)["error"]["code"] == 404
    w.write(b"GET /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n")
    status, hdrs, body = await response(r)
    assert status == 405 and hdrs["allow"] == "POST"
    w.write(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    w.write(post())  # still the same connection
    assert (await response(r))[0] == 200
    w.close()


async def test_query_strings_and_percent_encoded_paths_still_reach_the_inference_route(gw: Harness) -> None:
    r, w = await connect(gw)
    w.write(post(path=b"/v1/completions?x=1") + post(path=b"/v1/%63ompletions",
                                                     body=b'{"model": "m", "prompt": "s", "stream": true}'))
    (s1, _, _), (s2, h2, b2) = [await response(r) for _ in range(2)]
    assert (s1, s2) == (200, 200)
    assert h2["transfer-encoding"] == "chunked" and b2.endswith(b"data: [DONE]\n\n")  # streamed by the front
    w.close()


async def test_chunked_request_body_and_expect_continue(gw: Harness) -> None:
    r, w = await connect(gw)
    w.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (10, BODY[:10]) + b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY) - 10, BODY[10:]))
    assert (await response(r))[0] == 200
    w.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
            % len(BODY))
    assert await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    w.write(BODY)
    assert (await response(r))[0] == 200
    w.close()


async def test_http10_stream_is_delimited_by_close(gw: Harness) -> None:
    r, w = await connect(gw)
    body = b'{"model": "m", "prompt": "s", "stream": true}'
    w.write(b"POST /v1/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    raw, _ = await until_closed(r)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert status_of(raw) == 200 and b"chunked" not in head.lower()
    assert rest.startswith(b"data: ") and rest.endswith(b"data: [DONE]\n\n")
    w.close()


async def test_http10_keep_alive_is_answered_with_keep_alive(gw: Harness) -> None:
    r, w = await connect(gw)
    w.write(b"POST /v1/completions HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
    status, hdrs, _ = await response(r)
    assert status == 200 and hdrs["connection"] == "keep-alive"
    w.write(b"GET /health HTTP/1.0\r\n\r\n")  # no keep-alive asked: answered, then closed
    raw, _ = await until_closed(r)
    assert status_of(raw) == 200 and b"connection: close" in raw.lower()
    w.close()


@pytest.mark.parametrize(
    ("extra", "data", "status"),
    [(b"Content-Encoding: gzip\r\n", gzip.compress(BODY), 200),
     (b"Content-Encoding: deflate\r\n", __import__("zlib").compress(BODY), 200),
     (b"Content-Encoding: gzip\r\n", gzip.compress(b'{"prompt": "' + b" " * 5_000_000 + b'"}'), 413),
     (b"Content-Encoding: gzip\r\n", b"\x1f\x8b\x08\x00garbage", 400),
     (b"Content-Encoding: gzip\r\n", gzip.compress(BODY)[:-6], 400),  # truncated stream
     (b"Content-Encoding: br\r\n", b"whatever", 415),
     (b"", b"{" + b" " * 70_000 + b"}", 413),
     (b"", b'{"prompt": "\xed\xa0\x80"}', 400),
     (b"", b"[" * 1000 + b"]" * 1000, 400)],
    ids=["gzip", "deflate", "gzip-bomb", "bad-gzip", "truncated-gzip", "br", "too-large", "bad-utf8", "deep"],
)
async def test_body_checks(gw: Harness, extra: bytes, data: bytes, status: int) -> None:
    r, w = await connect(gw)
    w.write(post(data, extra=extra))
    got, hdrs, body = await response(r)
    assert got == status, body
    if status != 200:
        err = msgspec.json.decode(body)["error"]
        assert err["code"] == status and set(err) == {"message", "type", "param", "code"}
    w.close()


async def test_half_sent_headers_get_408_then_close(gw: Harness) -> None:
    r, w = await connect(gw)
    w.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
    raw, took = await until_closed(r)
    assert status_of(raw) == 408 and error_of(raw)["code"] == 408
    assert HEADER_S * 0.8 < took < HEADER_S + 2
    w.close()


async def test_silent_and_idle_connections_are_closed_without_a_response(gw: Harness) -> None:
    r, w = await connect(gw)
    raw, took = await until_closed(r)
    assert raw == b"" and took < HEADER_S + 2
    r, w = await connect(gw)
    w.write(post())
    assert (await response(r))[0] == 200
    raw, took = await until_closed(r)  # kept alive, then idle past keepalive_timeout_s
    assert raw == b"" and took < LIMITS["keepalive_timeout_s"] + 2  # type: ignore[operator]
    w.close()


async def test_trickled_headers_do_not_extend_the_deadline(gw: Harness) -> None:
    r, w = await connect(gw)

    async def trickle() -> None:
        for b in b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 500:
            w.write(bytes([b]))
            await asyncio.sleep(0.02)  # a slowloris client: one byte every 20 ms, never finishing

    task = asyncio.create_task(trickle())
    try:
        raw, took = await until_closed(r)
    finally:
        task.cancel()
    assert status_of(raw) == 408 and took < HEADER_S + 2
    w.close()


async def test_half_sent_body_gets_408_and_close(gw: Harness) -> None:
    r, w = await connect(gw)
    w.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\": ")
    raw, took = await until_closed(r)
    assert status_of(raw) == 408 and error_of(raw)["param"] == "body"
    assert took < BODY_S + 2
    w.close()


@pytest.mark.parametrize(
    "request_bytes",
    [b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"s3cr3t" * 400 + b"\r\n\r\n",
     b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: s3cr3t\r\n" % i for i in range(50)) + b"\r\n",
     b"GET /v1/" + b"s3cr3t" * 400 + b" HTTP/1.1\r\nHost: x\r\n\r\n"],
    ids=["header-too-long", "too-many-headers", "url-too-long"],
)
async def test_oversized_heads_get_431_json_without_echo(gw: Harness, request_bytes: bytes) -> None:
    r, w = await connect(gw)
    w.write(request_bytes)
    raw, _ = await until_closed(r)
    assert status_of(raw) == 431 and error_of(raw)["code"] == 431
    assert b"s3cr3t" not in raw
    w.close()


async def test_garbage_gets_400_json_without_echo(gw: Harness) -> None:
    r, w = await connect(gw)
    w.write(b"\x16\x03\x01 s3cr3t not http\r\n\r\n")
    raw, _ = await until_closed(r)
    assert status_of(raw) == 400 and b"s3cr3t" not in raw and error_of(raw)["code"] == 400
    w.close()


async def test_declared_oversize_is_refused_before_the_body(gw: Harness) -> None:
    r, w = await connect(gw)
    w.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")  # no body follows
    raw, _ = await until_closed(r)
    assert status_of(raw) == 413 and error_of(raw)["param"] == "body"
    w.close()


async def test_the_aiohttp_face_runs_the_same_request_path(upstreams: Callable[..., Any]) -> None:
    """``gateway.http_server: aiohttp``: the same ``serve_inference`` behind aiohttp's server."""
    up: FakeUpstream = await upstreams()
    async with gateway_for([up], {"gateway": {"http_server": "aiohttp"}}) as h:
        r, w = await connect(h)
        w.write(post() + post(b'{"model": "m", "prompt": "s", "stream": true}') + post(b'{"model": "nope", "prompt": "x"}'))
        (s1, h1, b1), (s2, h2, b2), (s3, _, b3) = [await response(r) for _ in range(3)]
        assert (s1, s2, s3) == (200, 200, 404)
        assert "aiohttp" in h1.get("server", "") and h2["transfer-encoding"] == "chunked"
        assert b2.endswith(b"data: [DONE]\n\n") and msgspec.json.decode(b3)["error"]["code"] == 404
        w.close()
