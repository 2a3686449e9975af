"""A lean HTTP/1.1 client for the proxy hot path: keep-alive pools of raw asyncio connections.

Why not aiohttp's client here: per proxied request it builds a ``ClientRequest``, payload, timers and a
``ClientResponse``. The gateway needs one thing: POST a body to a model server it knows and relay what
comes back. So: one write per request (head + body), responses framed by ``httptools`` (llhttp, the
parser uvicorn uses: status, headers, ``Content-Length`` / chunked / read-to-close bodies), and the body
bytes handed over as they arrive. aiohttp still serves health checks, scrapes and the inbound side.
Measured (benchmarks/gateway_hotpath.py --client-only, 2 shared cores, client CPU per streamed request):
aiohttp ~161 us, the earlier hand-written parser ~110 us, this ~82 us.

``Upstreams.post`` returns once the response head arrived; the response reads like aiohttp's
(``content.readany()``, ``at_eof()``, ``read()``, ``release()``, ``close()``). A connection goes back to
its pool only after a complete response on a keep-alive connection; anything else closes it.

NOTE: a pooled connection that the server closed while idle (uvicorn drops them after 5 s) can fail the
next request before any response byte; that request is resent once on a fresh connection (nothing of it
was processed). Failures to connect raise ``ConnectError``; the proxy turns both into the gateway's errors.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping

import httptools
from multidict import CIMultiDict

from lanterna.gateway.transport import ConnectError

__all__ = ["ConnectError", "UpstreamResponse", "Upstreams"]

_PAUSE_AT = 256 * 1024  # buffered unread response bytes before the socket stops being read


class _Stale(ConnectionResetError):
    """A pooled connection closed before any byte of the response: the server never took the request."""


class UpstreamResponse:
    """The head of an upstream response plus a reader for its body (also its own ``content``)."""

    __slots__ = ("status", "headers", "content_type", "_conn", "_buf", "_eof", "_exc", "_waiter", "_idle_s")

    def __init__(self, conn: _Conn, idle_s: float) -> None:
        self._conn = conn
        self._idle_s = idle_s
        self._buf = bytearray()
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.content_type = ""

    @property
    def content(self) -> UpstreamResponse:
        return self

    def at_eof(self) -> bool:
        return self._eof and not self._buf

    async def readany(self) -> bytes:
        """Whatever body bytes are buffered, waiting (at most ``idle_s``) when none are; b"" at the end."""
        while not self._buf:
            if self._exc is not None:
                raise self._exc
            if self._eof:
                return b""
            loop = asyncio.get_running_loop()
            fut = self._waiter = loop.create_future()
            timer = loop.call_later(self._idle_s, _expire, fut)
            try:
                await fut
            finally:
                timer.cancel()
                self._waiter = None
        data = bytes(self._buf)
        self._buf.clear()
        self._conn.resume()
        return data

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Back to the pool when the response was read to its end on a keep-alive connection."""
        self._conn.finish(reusable=self._eof and not self._buf and self._exc is None)

    def close(self) -> None:
        self._conn.finish(reusable=False)

    # -- fed by the connection ---------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._buf += data
        self._wake()
        if len(self._buf) > _PAUSE_AT:
            self._conn.pause()

    def _end(self, exc: BaseException | None = None) -> None:
        if exc is not None and not self._eof:
            self._exc = exc
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("upstream sent nothing within the stream idle timeout"))


class _OutOfStep(Exception):
    """Response bytes the connection did not ask for (a second response to one request)."""


class _Conn(asyncio.Protocol):
    """One keep-alive connection; ``httptools`` (llhttp) frames the response to the request in flight.

    The parser lives as long as the connection (llhttp resets itself between keep-alive messages); its
    callbacks fill the ``UpstreamResponse``. Read-to-close bodies (no length, not chunked) end cleanly when
    the server closes: llhttp has no end-of-input call in httptools, so ``connection_lost`` decides.
    """

    def __init__(self, pool: Upstreams, address: str) -> None:
        self.pool = pool
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._got = False  # any byte of the current response arrived
        self._done = True  # the current response (if any) is complete
        self._to_close = False  # the current body is framed by the server closing the connection
        self._raw: list[tuple[bytes, bytes]] = []
        self._resp: UpstreamResponse | None = None
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self._keep_alive = True
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        err = (_Stale if not self._got else ConnectionResetError)(
            f"upstream {self.address} closed the connection" + (f": {exc}" if exc else ""))
        if self._head is not None and not self._head.done():
            self._head.set_exception(err)
        if self._resp is not None and not self._done:
            self._done = self._to_close
            self._resp._end(None if self._to_close else err)

    def send(self, head: bytes, body: bytes, idle_s: float) -> asyncio.Future[UpstreamResponse]:
        assert self.transport is not None
        self._resp = UpstreamResponse(self, idle_s)
        self._head = asyncio.get_running_loop().create_future()
        self._got = self._done = self._to_close = False
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        return self._head

    def finish(self, reusable: bool) -> None:
        resp, self._resp = self._resp, None
        if resp is None:
            return
        if reusable and self._keep_alive and self._done and not self._to_close and not self.closed:
            self.pool.put(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        resp = self._resp
        if resp is None:  # bytes while idle: the connection is out of step, drop it
            self.abort()
            return
        self._got = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else exc
            err = ConnectionResetError(f"malformed response from upstream {self.address}: {cause}")
            if self._head is not None and not self._head.done():
                self._head.set_exception(err)
            if not self._done:
                self._done = True
                resp._end(err)
            self._keep_alive = False
            self.abort()

    # -- httptools callbacks -----------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._done:
            raise _OutOfStep("unexpected bytes after the response")
        self._raw = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        resp, p = self._resp, self._parser
        assert resp is not None and self._head is not None
        status = p.get_status_code()
        if status < 200:  # interim (100 Continue, 103 Early Hints): the real head follows
            return
        resp.status = status
        hdrs = resp.headers
        for k, v in self._raw:
            hdrs.add(k.decode("latin-1"), v.decode("latin-1"))
        resp.content_type = hdrs.get("content-type", "").partition(";")[0].strip().lower()
        self._keep_alive = p.should_keep_alive()
        self._to_close = (status not in (204, 304) and "content-length" not in hdrs
                          and "chunked" not in hdrs.get("transfer-encoding", "").lower())
        if not self._head.done():
            self._head.set_result(resp)

    def on_body(self, body: bytes) -> None:
        assert self._resp is not None
        self._resp._feed(body)

    def on_message_complete(self) -> None:
        resp = self._resp
        assert resp is not None
        if resp.status == 0:  # the end of an interim response
            return
        self._done = True
        resp._end()


class Upstreams:
    """Keep-alive connection pools, one per ``host:port``; at most ``max_idle`` idle connections each."""

    def __init__(self, connect_s: float, idle_s: float, max_idle: int = 512) -> None:
        self.connect_s = connect_s
        self.idle_s = idle_s
        self.max_idle = max_idle
        self._idle: dict[str, list[_Conn]] = {}

    async def _connect(self, address: str) -> _Conn:
        host, _, port = address.rpartition(":")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_s):
                _, conn = await loop.create_connection(lambda: _Conn(self, address), host, int(port))
        except TimeoutError:
            raise ConnectError(f"could not connect to {address} within {self.connect_s:g}s (connect timeout)") from None
        except OSError as exc:
            raise ConnectError(f"could not connect to {address}: {exc.strerror or exc}") from None
        return conn

    def _take(self, address: str) -> _Conn | None:
        idle = self._idle.get(address)
        while idle:
            conn = idle.pop()  # most recently used: the least likely to have been closed by the server
            if not conn.closed:
                return conn
        return None

    def put(self, conn: _Conn) -> None:
        idle = self._idle.setdefault(conn.address, [])
        if len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.abort()

    async def prewarm(self, address: str, n: int) -> None:
        """Open up to ``n`` idle connections (errors ignored: health checks judge the endpoint)."""
        res = await asyncio.gather(*(self._connect(address) for _ in range(n)), return_exceptions=True)
        for conn in res:
            if isinstance(conn, _Conn):
                self.put(conn)

    async def post(self, address: str, path: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """Send the request and wait for the response head; the caller must ``release()`` or ``close()``."""
        parts = [f"POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {len(body)}\r\n"]
        parts += [f"{k}: {v}\r\n" for k, v in headers.items()]
        parts.append("\r\n")
        return await self._send(address, "".join(parts).encode("latin-1"), body)

    async def get(self, address: str, path: str, timeout_s: float) -> tuple[int, bytes]:
        """A small GET read whole (the ``/metrics`` scrapes, 10-20 per second per endpoint), over the same
        pools: about a quarter of aiohttp's client CPU per call. ``OSError`` / ``TimeoutError`` on failure."""
        head = f"GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: */*\r\n\r\n".encode("latin-1")
        async with asyncio.timeout(timeout_s):
            resp = await self._send(address, head, b"")
            try:
                body = await resp.read()
            except BaseException:
                resp.close()
                raise
        resp.release()
        return resp.status, body

    async def _send(self, address: str, head: bytes, body: bytes) -> UpstreamResponse:
        conn = self._take(address)
        if conn is not None:
            try:
                return await conn.send(head, body, self.idle_s)
            except _Stale:  # closed by the server while idle: resend once on a new connection
                conn.abort()
            except BaseException:  # timeout, cancellation: the connection is mid-request, unusable
                conn.abort()
                raise
        conn = await self._connect(address)
        try:
            return await conn.send(head, body, self.idle_s)
        except BaseException:
            conn.abort()
            raise

    def forget(self, address: str) -> None:
        """Close the idle connections to a removed endpoint (in-flight ones close when released)."""
        for conn in self._idle.pop(address, ()):
            conn.abort()

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
