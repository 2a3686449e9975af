"""The lean upstream client against scripted raw HTTP servers: framing, keep-alive reuse, stale connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from lanterna.gateway.upstream import ConnectError, Upstreams

Reply = Callable[[int, bytes], list[bytes]]  # (request number on this server, request bytes) -> pieces to send


class Scripted:
    """A raw TCP server: reads one request (head + Content-Length body), writes the scripted pieces."""

    def __init__(self, reply: Reply, close_after: bool = False) -> None:
        self.reply, self.close_after = reply, close_after
        self.requests: list[bytes] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                cl = head.lower().split(b"content-length: ")
                length = int(cl[1].split(b"\r\n")[0]) if len(cl) > 1 else 0  # a GET has none
                req = head + await reader.readexactly(length)
                self.requests.append(req)
                for piece in self.reply(len(self.requests), req):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0)  # separate segments: the parser must resume mid-frame
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass
        writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., object]]:
    servers = []

    async def start(reply: Reply, **kw: bool) -> tuple[Scripted, str]:
        s = Scripted(reply, **kw)
        srv = await asyncio.start_server(s._serve, "127.0.0.1", 0)
        servers.append(srv)
        return s, f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"

    yield start
    for srv in servers:
        srv.close()


def _chunked(*parts: bytes) -> list[bytes]:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    out = [head]
    for p in parts:  # split each chunk's framing over several writes
        out += [f"{len(p):x}\r".encode(), b"\n" + p[:3], p[3:] + b"\r\n"]
    return [*out, b"0\r\n", b"\r\n"]


async def test_chunked_stream_split_anywhere_then_connection_reused(serve) -> None:
    frames = [b"data: {\"a\": 1}\n\n", b"data: {\"b\": 2}\n\n", b"data: [DONE]\n\n"]
    srv, addr = await serve(lambda n, req: _chunked(*frames))
    up = Upstreams(connect_s=1.0, idle_s=5.0)
    for _ in range(3):
        resp = await up.post(addr, "/v1/completions", b'{"x": 1}', {"content-type": "application/json"})
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        assert await resp.read() == b"".join(frames) and resp.at_eof()
        resp.release()
    assert srv.connections == 1  # keep-alive: one connection for all three
    assert srv.requests[0].startswith(b"POST /v1/completions HTTP/1.1\r\nHost: " + addr.encode())
    assert srv.requests[0].endswith(b'\r\n\r\n{"x": 1}') and b"content-type: application/json" in srv.requests[0]
    up.close()


async def test_get_reads_whole_bodies_over_the_pooled_connection_and_scrapes_with_it(serve) -> None:
    from lanterna.endpoints.scrape import MetricsScraper
    from lanterna.endpoints.types import Endpoint

    exposition = b"vllm:num_requests_running 3\nvllm:num_requests_waiting 2\nvllm:kv_cache_usage_perc 0.5\n"
    srv, addr = await serve(lambda n, req: [
        f"HTTP/1.1 200 OK\r\nContent-Length: {len(exposition)}\r\n\r\n".encode() + exposition[:9],
        exposition[9:]])
    up = Upstreams(connect_s=1.0, idle_s=5.0)
    assert await up.get(addr, "/metrics", 1.0) == (200, exposition)
    ep = Endpoint(id=addr, address=addr)
    scraper = MetricsScraper(None, fetch=up.get)  # type: ignore[arg-type]  # the session is not used
    assert await scraper.scrape_once(ep)
    assert (ep.metrics.num_running, ep.metrics.num_waiting, ep.metrics.kv_cache_usage) == (3, 2, 0.5)
    assert srv.connections == 1 and srv.requests[1].startswith(b"GET /metrics HTTP/1.1\r\nHost: ")
    _, silent = await serve(lambda n, req: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"])
    with pytest.raises(TimeoutError):
        await up.get(silent, "/metrics", 0.05)
    ep2 = Endpoint(id=silent, address=silent)
    assert not await MetricsScraper(None, timeout_s=0.05, fetch=up.get).scrape_once(ep2)  # type: ignore[arg-type]
    assert ep2.metrics.scraped_at == float("-inf")  # a failed scrape leaves the snapshot to age
    up.close()
    await scraper.close()


async def test_content_length_and_read_to_close(serve) -> None:
    _, a = await serve(lambda n, req: [b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbu", b"sy"])
    up = Upstreams(connect_s=1.0, idle_s=5.0)
    resp = await up.post(a, "/p", b"{}", {})
    assert resp.status == 503 and await resp.read() == b"busy"
    resp.release()
    _, b = await serve(lambda n, req: [b"HTTP/1.1 200 OK\r\n\r\nuntil ", b"close"], close_after=True)
    resp = await up.post(b, "/p", b"{}", {})
    assert await resp.read() == b"until close"
    up.close()


async def test_connection_closed_while_idle_is_resent_once_on_a_new_one(serve) -> None:
    srv, addr = await serve(lambda n, req: [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    up = Upstreams(connect_s=1.0, idle_s=5.0)
    resp = await up.post(addr, "/p", b"{}", {})
    assert await resp.read() == b"ok"
    resp.release()
    srv.writers[0].close()  # the server drops the idle keep-alive connection (uvicorn does after 5 s)
    await srv.writers[0].wait_closed()
    resp = await up.post(addr, "/p", b"{}", {})
    assert resp.status == 200 and await resp.read() == b"ok"
    assert srv.connections == 2 and len(srv.requests) == 2
    up.close()


async def test_mid_body_death_raises_and_idle_timeout_raises(serve) -> None:
    _, addr = await serve(lambda n, req: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], close_after=True)
    up = Upstreams(connect_s=1.0, idle_s=5.0)
    resp = await up.post(addr, "/p", b"{}", {})
    with pytest.raises(ConnectionResetError):
        await resp.read()
    resp.close()
    _, slow = await serve(lambda n, req: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"])
    up2 = Upstreams(connect_s=1.0, idle_s=0.05)
    resp = await up2.post(slow, "/p", b"{}", {})
    assert await resp.readany() == b"abc"
    with pytest.raises(TimeoutError):
        await resp.readany()
    resp.close()
    up.close()
    up2.close()


async def test_refused_connect_is_a_connect_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(ConnectError, match="could not connect"):
        await Upstreams(connect_s=1.0, idle_s=1.0).post(addr, "/p", b"{}", {})


async def test_chunked_death_mid_body_raises_and_drops_the_connection(serve) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    srv, addr = await serve(lambda n, req: [head, b"5\r\nhel"], close_after=True)
    up = Upstreams(connect_s=1.0, idle_s=5.0)
    resp = await up.post(addr, "/p", b"{}", {})
    assert resp.status == 200
    with pytest.raises(ConnectionResetError, match="closed the connection"):
        await resp.read()
    resp.release()  # not reusable: the next request opens a new connection
    assert up._take(addr) is None
    up.close()


async def test_chunk_extensions_trailers_and_interim_head(serve) -> None:
    pieces = [b"HTTP/1.1 100 Continue\r\n\r\n",
              b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
              b"3;ext=1\r\nabc\r\n", b"0\r\nX-Trailer: t\r\n\r\n"]
    srv, addr = await serve(lambda n, req: pieces)
    up = Upstreams(connect_s=1.0, idle_s=5.0)
    for _ in range(2):
        resp = await up.post(addr, "/p", b"{}", {})
        assert resp.status == 200 and resp.headers.getall("x-a") == ["1", "2"]
        assert await resp.read() == b"abc"
        resp.release()
    assert srv.connections == 1
    up.close()


async def test_empty_bodies_and_connection_close_header(serve) -> None:
    srv, addr = await serve(lambda n, req: [b"HTTP/1.1 204 No Content\r\n\r\n"] if n == 1 else
                            [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"])
    up = Upstreams(connect_s=1.0, idle_s=5.0)
    resp = await up.post(addr, "/p", b"{}", {})
    assert resp.status == 204 and await resp.read() == b"" and resp.at_eof()
    resp.release()
    resp = await up.post(addr, "/p", b"{}", {})  # same connection (204 has no body), server says close
    assert resp.status == 200 and await resp.read() == b""
    resp.release()
    assert srv.connections == 1 and up._take(addr) is None  # `Connection: close` is never pooled
    up.close()


async def test_read_to_close_response_is_never_pooled(serve) -> None:
    srv, addr = await serve(lambda n, req: [b"HTTP/1.1 200 OK\r\n\r\nbody"], close_after=True)
    up = Upstreams(connect_s=1.0, idle_s=5.0)
    for _ in range(2):
        resp = await up.post(addr, "/p", b"{}", {})
        assert await resp.read() == b"body"
        resp.release()
    assert srv.connections == 2
    up.close()


async def test_malformed_head_and_bytes_after_the_response(serve) -> None:
    _, bad = await serve(lambda n, req: [b"garbage\r\n\r\n"])
    up = Upstreams(connect_s=1.0, idle_s=5.0)
    with pytest.raises(ConnectionResetError, match="malformed response"):
        await up.post(bad, "/p", b"{}", {})
    srv, extra = await serve(lambda n, req: [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"])
    resp = await up.post(extra, "/p", b"{}", {})
    assert await resp.read() == b"ok"
    resp.release()  # a second response to one request: the connection is out of step, closed not pooled
    assert up._take(extra) is None
    up.close()


async def test_large_body_is_read_whole_with_backpressure(serve) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB, beyond the pause threshold
    _, addr = await serve(lambda n, req: [f"HTTP/1.1 200 OK\r\nContent-Length: {len(big)}\r\n\r\n".encode(), big])
    up = Upstreams(connect_s=1.0, idle_s=5.0)
    resp = await up.post(addr, "/p", b"{}", {})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while not resp._conn._paused:  # nobody reads: the socket must stop being read past the threshold
        assert loop.time() < deadline, "reading never paused"
        await asyncio.sleep(0.001)
    assert len(resp._buf) < len(big)
    assert await resp.read() == big
    resp.release()
    up.close()
