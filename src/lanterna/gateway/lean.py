"""The client-facing HTTP/1.1 server: ``httptools`` framing on raw asyncio connections for the inference path.

Why not aiohttp's server here: per request it builds a ``Request``, a ``StreamResponse`` and a payload writer and
runs the middleware chain; the gateway's whole budget is a few hundred microseconds. ``benchmarks/http_front.py``
(500 req/s, trivial route): a minimal aiohttp app 0.160 ms CPU per request, minimal httptools framing 0.053 ms; the
gateway's ``/health`` 0.180 ms on aiohttp, 0.127 ms here. The same parser (llhttp) frames both.

Served here: ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models``, ``/health``, ``/ready``.
Every other request (``/metrics``, ``/debug/*``, ``/admin/*``, unknown paths, other methods, ``HEAD``) is handed
whole to the aiohttp application over an in-memory transport (``_Capture``), so routing, 404/405 and the admin
checks keep one implementation; those routes are cold.

Limits are the aiohttp edge's (``gateway/server.py``, ``EdgeLimitsConfig``): request line and header field size,
header count (431), a header deadline from the first byte of a request (408 if anything was sent, then close;
re-checked when the event loop itself ran late), a body deadline (408), the body cap after decompression (413;
gzip/deflate inflated incrementally, so a bomb stops at the cap), other encodings 415, malformed HTTP 400 without
echoing the client's bytes. Authentication, the request-rate charge and the drain refusal happen when the headers
are complete, before the body is read; a refusal then closes the connection (its body was never read). Timers are
lazy: one sweep per server checks header, body and keep-alive deadlines, so a request arms none.

A connection serves its requests in order (pipelined ones queue, reading pauses beyond a few); a client that
disconnects cancels its request's task (the upstream request is then closed, so vLLM aborts it); writes wait while
the client's socket buffer is full, so a slow reader holds one buffer, not the stream.
"""

from __future__ import annotations

import asyncio
import http
import logging
import socket
import time
import zlib
from collections import deque
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any, cast
from urllib.parse import unquote_to_bytes

import httptools
import msgspec
from aiohttp import web
from multidict import CIMultiDict

from lanterna.auth.principal import Principal
from lanterna.config.model import EdgeLimitsConfig
from lanterna.errors import (
    InternalError,
    InvalidRequest,
    LanternaError,
    RequestTimeout,
)
from lanterna.gateway.auth import admit_request
from lanterna.gateway.edge import declared_too_large, too_large, unsupported_encoding
from lanterna.gateway.middleware import as_error, new_request_id
from lanterna.gateway.routes import edge_rejected, health_answer, models_answer, ready_answer, serve_inference
from lanterna.gateway.server import LATE_S, MAX_GRACE, headers_too_large, raw_error, runner_for
from lanterna.gateway.state import Gateway
from lanterna.gateway.tracing import pass_through, server_trace
from lanterna.obs.logs import REQUEST_ID
from lanterna.obs.tracing import NO_TRACE, RequestTrace

log = logging.getLogger(__name__)

# (method, path) -> route; anything else goes to the aiohttp app.
_HOT: dict[tuple[bytes, bytes], str] = {
    (b"POST", b"/v1/completions"): "completions",
    (b"POST", b"/v1/chat/completions"): "chat",
    (b"GET", b"/v1/models"): "models",
    (b"GET", b"/health"): "health",
    (b"GET", b"/ready"): "ready",
}
_CLIENT_ROUTES = frozenset(("completions", "chat", "models"))  # under /v1/: authenticated
_EXEMPT_ROUTES = frozenset(("health", "ready"))  # probes keep working while draining
_PIPELINE_MAX = 4  # queued requests on one connection before reading pauses
_BRIDGE_TIMEOUT_S = 60.0
_JSON = "application/json"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_HOP = frozenset((b"connection", b"content-length", b"transfer-encoding", b"keep-alive", b"expect", b"upgrade"))


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("ascii")


_STATUS = {s.value: _status_line(s.value) for s in http.HTTPStatus}


class _DateCache:
    """The ``Date`` header, formatted once per second."""

    __slots__ = ("_sec", "_value")

    def __init__(self) -> None:
        self._sec = -1
        self._value = b""

    def get(self) -> bytes:
        sec = int(time.time())
        if sec != self._sec:
            self._sec = sec
            self._value = b"date: " + formatdate(sec, usegmt=True).encode("ascii") + b"\r\n"
        return self._value


class _Reject(Exception):
    """Raised from a parser callback: answer ``err`` and close the connection."""

    def __init__(self, err: LanternaError) -> None:
        super().__init__(err.message)
        self.err = err


class LeanRequest:
    """One parsed request (the inference path reads it through ``face.ClientRequest``)."""

    __slots__ = ("body", "chunks", "close", "headers", "inflate", "inflated", "keep_alive", "method", "path",
                 "principal", "raw_headers", "reject", "remote", "rid", "route", "size", "url", "version")

    def __init__(self, method: str, url: bytes, path: str, route: str | None, raw_headers: list[tuple[bytes, bytes]],
                 remote: str | None) -> None:
        self.method = method
        self.url = url
        self.path = path
        self.route = route
        self.raw_headers = raw_headers
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.remote = remote
        self.rid = ""
        self.keep_alive = True
        self.version = "1.1"
        self.chunks: list[bytes] = []
        self.size = 0  # bytes received (before decompression)
        self.inflate: Any = None  # a zlib decompressobj while the body is gzip/deflate
        self.inflated = 0
        self.body = b""
        self.reject: LanternaError | None = None
        self.close = False  # close the connection after the response
        self.principal: Principal | None = None


class _Reply:
    """``face.Reply`` on a lean connection."""

    __slots__ = ("_conn", "_head", "_req", "chunked", "state", "status")

    def __init__(self, conn: _Conn, req: LeanRequest) -> None:
        self._conn = conn
        self._req = req
        self._head = b""
        self.chunked = req.version != "1.0"
        self.state = 0  # 0 nothing sent, 1 started (head pending), 2 streaming, 3 complete
        self.status = 0

    async def send(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """The whole response in one write; a client already gone is not an error here (its task is cancelled)."""
        conn = self._conn
        self.status, self.state = status, 3
        if conn.closed:
            return
        head = conn.head(status, headers, self._req, b"content-length: %d\r\n" % len(body))
        conn.transport.write(head + body if len(body) < 65536 else head)  # type: ignore[union-attr]
        if len(body) >= 65536:
            conn.transport.write(body)  # type: ignore[union-attr]
        if conn.paused_writing:
            try:
                await conn.drain()
            except ConnectionError:
                pass

    async def start(self, status: int, headers: Mapping[str, str]) -> None:
        if not self.chunked:
            self._req.close = True  # HTTP/1.0: the end of the body is the end of the connection
        self._head = self._conn.head(status, headers, self._req,
                                     b"transfer-encoding: chunked\r\n" if self.chunked else b"")
        self.status, self.state = status, 1

    async def write(self, data: bytes) -> None:
        if data:
            self._out(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)
            if self._conn.paused_writing:
                await self._conn.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        if self.state == 3:
            return
        if self.chunked:
            self._out(b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data) if data else _LAST_CHUNK)
        else:
            self._out(data)
        self.state = 3
        if self._conn.paused_writing:
            await self._conn.drain()

    def _out(self, frame: bytes) -> None:
        conn = self._conn
        if conn.closed or conn.transport is None or conn.transport.is_closing():
            raise ConnectionResetError("client disconnected")
        if self._head:
            frame, self._head = self._head + frame, b""
        self.state = 2
        conn.transport.write(frame)


class _Capture(asyncio.Transport):
    """The in-memory transport a cold request runs on: aiohttp writes its response here; closing it ends it."""

    def __init__(self, real: asyncio.Transport, done: asyncio.Future[None]) -> None:
        super().__init__()
        self._real = real
        self._done = done
        self.buf = bytearray()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return None  # no socket options on the real connection
        return self._real.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.buf += data

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.buf += data

    def is_closing(self) -> bool:
        return self._done.done()

    def close(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def abort(self) -> None:
        self.close()

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


class _Conn(asyncio.Protocol):
    """One client connection (see the module doc)."""

    def __init__(self, front: LeanFront) -> None:
        self.f = front
        self.loop = front.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.remote: str | None = None
        self.url = b""
        self.raw: list[tuple[bytes, bytes]] = []
        self.req: LeanRequest | None = None  # being parsed
        self.queue: deque[LeanRequest] = deque()
        self.task: asyncio.Task[None] | None = None
        self.discard = False  # a refusal is queued: the rest of the input is ignored
        self.closed = False
        self.paused_writing = False
        self.paused_reading = False
        self.drain_waiter: asyncio.Future[None] | None = None
        # lazy deadlines, checked by the front's sweep (loop time; None: not running)
        self.hdr_since: float | None = None
        self.hdr_got_bytes = False
        self.hdr_grace = 0
        self.body_since: float | None = None
        self.idle_since: float | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else (str(peer) if peer else None)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.hdr_since = self.loop.time()  # the first request's head is due within header_timeout_s
        self.f.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.f.conns.discard(self)
        self.hdr_since = self.body_since = self.idle_since = None
        task = self.task
        if task is not None and not task.done():
            task.cancel()  # the client left: its request is abandoned (the upstream request is closed)
        w = self.drain_waiter
        if w is not None and not w.done():
            w.set_exception(ConnectionResetError("client disconnected"))

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        w = self.drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.discard:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self.refuse(cause.err)
            else:
                log.error("lean_parser_callback_failed", exc_info=cause)
                self.refuse(InternalError("internal error"))
        except httptools.HttpParserUpgrade:
            self.refuse(InvalidRequest("Protocol upgrades are not supported."))
        except httptools.HttpParserError:
            self.refuse(InvalidRequest("Malformed HTTP request."))  # never echo the client's bytes back
        else:
            if self.req is not None and self.body_since is None and self.hdr_since is None:
                self.body_since = self.loop.time()  # a body still to come: its deadline starts now

    # --- httptools callbacks -------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.raw = []
        self.idle_since = None
        if self.hdr_since is None:
            self.hdr_since, self.hdr_got_bytes, self.hdr_grace = self.loop.time(), True, 0
        else:
            self.hdr_got_bytes = True

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.f.limits.max_line_size:
            raise _Reject(headers_too_large())

    def on_header(self, name: bytes, value: bytes) -> None:
        lim = self.f.limits
        if len(self.raw) >= lim.max_headers or len(name) + len(value) + 2 > lim.max_field_size:
            raise _Reject(headers_too_large())
        self.raw.append((name, value))

    def on_headers_complete(self) -> None:
        self.hdr_since = None
        parser = self.parser
        method = parser.get_method()
        url = self.url
        q = url.find(b"?")
        path = url if q < 0 else url[:q]
        if b"%" in path:  # percent-encoded: match what the aiohttp router would (it decodes the path)
            path = unquote_to_bytes(path)
        route = _HOT.get((method, path))
        req = LeanRequest(method.decode("latin-1"), url, path.decode("latin-1"), route, self.raw, self.remote)
        req.keep_alive = parser.should_keep_alive()
        req.version = parser.get_http_version()
        self.req = req
        if route is None:
            return  # cold: the aiohttp app sees the request as sent
        hdrs = req.headers = CIMultiDict([(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw])
        req.rid = hdrs.get("x-request-id") or new_request_id()
        err = self.f.admit_head(req)
        if err is not None:
            req.reject, req.close = err, True
            raise _Reject(err)
        if "expect" in hdrs and hdrs["expect"].lower() == "100-continue" and self.task is None and self.transport:
            self.transport.write(_CONTINUE)

    def on_body(self, data: bytes) -> None:
        req = self.req
        assert req is not None
        req.size += len(data)
        cap = self.f.max_body
        if req.size > cap and (req.inflate is None or req.size > 2 * cap + 65536):  # compressed: output is capped
            raise _Reject(too_large(cap, ""))
        if req.inflate is not None:
            data = self._inflate(req, data)
        req.chunks.append(data)

    def _inflate(self, req: LeanRequest, data: bytes) -> bytes:
        cap = self.f.max_body
        d = req.inflate
        if isinstance(d, int):  # deflate: zlib-wrapped per RFC 9110, raw deflate from clients that get it wrong
            d = req.inflate = zlib.decompressobj(zlib.MAX_WBITS if data and data[0] & 0x0F == 8 else -zlib.MAX_WBITS)
        try:
            out: bytes = d.decompress(data, cap - req.inflated + 1)
        except zlib.error:
            raise _Reject(InvalidRequest(f"request body is not valid {self._enc(req)} data", param="body")) from None
        req.inflated += len(out)
        if req.inflated > cap or d.unconsumed_tail:
            raise _Reject(too_large(cap, self._enc(req)))
        return out

    @staticmethod
    def _enc(req: LeanRequest) -> str:
        return req.headers.get("content-encoding", "").strip().lower()

    def on_message_complete(self) -> None:
        req = self.req
        assert req is not None
        self.req = None
        self.body_since = None
        if req.inflate is not None:
            d = req.inflate
            if isinstance(d, int):
                d = req.inflate = zlib.decompressobj()
            if not d.eof:
                raise _Reject(InvalidRequest(f"request body is not valid {self._enc(req)} data", param="body"))
        chunks = req.chunks
        req.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        req.chunks = []
        self.enqueue(req)

    # --- serving -------------------------------------------------------------------------------------------

    def enqueue(self, req: LeanRequest) -> None:
        self.queue.append(req)
        if self.task is None:
            self.task = self.loop.create_task(self._serve())
        elif len(self.queue) >= _PIPELINE_MAX and not self.paused_reading and self.transport is not None:
            self.paused_reading = True
            self.transport.pause_reading()

    def refuse(self, err: LanternaError) -> None:
        """Answer ``err`` after the responses already queued, then close; ignore the rest of the input."""
        self.discard = True
        self.hdr_since = self.body_since = None
        req = self.req
        self.req = None
        if req is None or req.route is None:  # a framing error: no request to answer through
            req = LeanRequest("", b"", "", None, [], self.remote)
            req.rid = new_request_id()
        req.reject, req.close = err, True
        req.route = req.route or "error"
        if self.transport is not None and not self.paused_reading:
            self.paused_reading = True
            self.transport.pause_reading()
        self.enqueue(req)

    async def _serve(self) -> None:
        try:
            while self.queue and not self.closed:
                req = self.queue.popleft()
                if self.paused_reading and not self.discard and len(self.queue) < 2 and self.transport is not None:
                    self.paused_reading = False
                    self.transport.resume_reading()
                keep = await (self.f.bridge(self, req) if req.route is None else self.f.handle(self, req))
                if not keep:
                    self.close()
                    return
        except Exception as exc:  # handle() answers its own errors; this is a bug in the front or the bridge
            log.error("lean_connection_failed", exc_info=exc)
            self.close()
        finally:
            self.task = None
            if not self.closed and not self.queue:
                self.idle_since = self.loop.time()

    def head(self, status: int, headers: Mapping[str, str], req: LeanRequest, framing: bytes) -> bytes:
        line = _STATUS.get(status) or _status_line(status)
        lines = "".join([f"{k}: {v}\r\n" for k, v in headers.items()]).encode("latin-1", "replace")
        if req.close or not req.keep_alive or self.f.closing:
            close, req.close = b"connection: close\r\n", True
        else:  # an HTTP/1.0 client keeps the connection only when told so
            close = b"connection: keep-alive\r\n" if req.version == "1.0" else b""
        return b"".join((line, self.f.date.get(), self.f.extra_head, lines, framing, close, b"\r\n"))

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("client disconnected")
        if not self.paused_writing:
            return
        w = self.drain_waiter = self.loop.create_future()
        try:
            await w
        finally:
            self.drain_waiter = None

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


class LeanFront:
    """The server: listening socket, connections, the deadline sweep, and the aiohttp app for cold routes.
    ``serve_lean`` builds and starts one; ``cleanup()`` stops it (and the app's lifecycle)."""

    def __init__(self, app: web.Application, gw: Gateway, limits: EdgeLimitsConfig, *,
                 extra_headers: Mapping[str, str] | None = None) -> None:
        assert gw.body_limits is not None
        self.gw = gw
        self.limits = limits
        self.max_body = gw.body_limits.max_body_bytes
        self.loop = asyncio.get_running_loop()
        self.conns: set[_Conn] = set()
        self.date = _DateCache()
        self.extra_head = "".join(f"{k}: {v}\r\n" for k, v in (extra_headers or {}).items()).encode("latin-1")
        self.closing = False
        self.runner = runner_for(app, limits)
        self._server: asyncio.Server | None = None
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_s = max(0.01, min(0.25, limits.header_timeout_s / 5, limits.body_timeout_s / 5))
        self._sweep_due = 0.0
        self._aio: Any = None  # the aiohttp web.Server (protocol factory) for cold requests

    @property
    def addresses(self) -> list[Any]:
        return [s.getsockname() for s in (self._server.sockets if self._server else ())]

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        await self.runner.setup()  # the app's startup and cleanup_ctx (pollers, first health round)
        self._aio = self.runner.server
        self._server = await self.loop.create_server(lambda: _Conn(self), host, port, backlog=4096,
                                                     reuse_address=True, reuse_port=reuse_port or None)
        self._schedule_sweep()

    async def cleanup(self) -> None:
        """Stop listening, close idle connections, let running requests finish (``drain_timeout_s``), cancel the
        rest, then stop the app (its pollers and pools)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        if self._sweep is not None:
            self._sweep.cancel()
        for c in list(self.conns):
            if c.task is None:
                c.close()
        tasks = [c.task for c in self.conns if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(1.0, self.limits.drain_timeout_s))
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
        for c in list(self.conns):
            c.close()
        await self.runner.cleanup()

    # --- deadlines -------------------------------------------------------------------------------------------

    def _schedule_sweep(self) -> None:
        self._sweep = self.loop.call_later(self._sweep_s, self._run_sweep)
        self._sweep_due = self._sweep.when()

    def _run_sweep(self) -> None:
        now = self.loop.time()
        late = now - self._sweep_due > LATE_S  # the loop is overloaded: unread bytes may be the server's fault
        lim = self.limits
        for c in list(self.conns):
            if c.hdr_since is not None and now - c.hdr_since > lim.header_timeout_s:
                if late and c.hdr_grace < MAX_GRACE:
                    c.hdr_grace += 1
                    continue
                self._expire(c, RequestTimeout(f"request headers not received within {lim.header_timeout_s:g}s")
                             if c.hdr_got_bytes else None)
            elif c.body_since is not None and now - c.body_since > lim.body_timeout_s:
                if late and c.hdr_grace < MAX_GRACE:
                    c.hdr_grace += 1
                    continue
                c.refuse(RequestTimeout(f"request body not received within {lim.body_timeout_s:g}s", param="body"))
            elif c.idle_since is not None and now - c.idle_since > lim.keepalive_timeout_s:
                c.close()
        self._schedule_sweep()

    @staticmethod
    def _expire(c: _Conn, err: LanternaError | None) -> None:
        """Header deadline: a 408 if the client sent anything (and nothing else is being answered), then close."""
        c.hdr_since = None
        if c.task is not None or c.queue:
            c.close()
            return
        if err is not None and c.transport is not None:
            c.transport.write(raw_error(err))
        c.close()

    # --- requests --------------------------------------------------------------------------------------------

    def admit_head(self, req: LeanRequest) -> LanternaError | None:
        """Checks on the complete head of a hot request, before its body is read: drain, authentication and the
        request-rate charge (``/v1/*``), the content-encoding and the declared length."""
        gw = self.gw
        route = req.route
        sd = gw.shutdown
        if sd is not None and sd.draining and route not in _EXEMPT_ROUTES:
            return sd.refusal_error()
        hdrs = req.headers
        if route in _CLIENT_ROUTES:
            auth = gw.auth
            assert auth is not None
            try:
                req.principal = auth.authenticate(hdrs)
                admit_request(auth, req.principal)
            except LanternaError as err:
                return err
        if req.method == "POST":
            enc = hdrs.get("content-encoding")
            if enc is not None:
                enc = enc.strip().lower()
                if enc in ("gzip", "deflate"):
                    req.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if enc == "gzip" else 0
                elif enc not in ("", "identity"):
                    return unsupported_encoding(enc)
            declared = hdrs.get("content-length")
            if declared is not None and req.inflate is None and declared.isdigit() and int(declared) > self.max_body:
                return declared_too_large(declared, self.max_body)
        return None

    async def handle(self, conn: _Conn, req: LeanRequest) -> bool:
        """Answer one hot request (or a refusal); True to keep the connection."""
        gw = self.gw
        token = REQUEST_ID.set(req.rid)
        reply = _Reply(conn, req)
        route = req.route
        sd = gw.shutdown
        admitted = False
        trace = NO_TRACE
        error: str | None = None
        try:
            if req.reject is not None:
                if route in _CLIENT_ROUTES:  # its access-log line, like any refused request
                    edge_rejected(gw, req, req.reject, req.principal)
                raise req.reject
            if sd is not None and route not in _EXEMPT_ROUTES:
                sd.enter()
                admitted = True
            if route == "completions" or route == "chat":
                trace = self._trace(req)
                assert req.principal is not None
                await serve_inference(gw, req, "chat" if route == "chat" else "completions", req.body,
                                      req.principal, trace, reply)
            elif route == "models":
                await reply.send(200, {"content-type": _JSON, "x-request-id": req.rid}, models_answer(gw))
            elif route == "health":
                await reply.send(200, {"content-type": _JSON, "x-request-id": req.rid}, health_answer(gw))
            else:
                status, body, extra = ready_answer(gw)
                await reply.send(status, {"content-type": _JSON, "x-request-id": req.rid, **(extra or {})}, body)
        except asyncio.CancelledError:
            error = "cancelled"
            raise
        except Exception as exc:
            err = as_error(exc, req.rid, req.path)
            error = err.error_type if err is exc else type(exc).__name__
            if reply.state == 0:
                await reply.send(err.status, {"content-type": _JSON, "x-request-id": req.rid, **err.headers},
                                 msgspec.json.encode(err.body()))
            else:
                req.close = True  # a response is under way: the connection cannot carry another
        finally:
            if admitted:
                assert sd is not None
                sd.leave()
            if trace.recording:
                trace.end(status=reply.status or None, error=error)
            REQUEST_ID.reset(token)
        if reply.state != 3:
            req.close = True  # a stream left unfinished
        return not req.close and req.keep_alive and not conn.closed

    def _trace(self, req: LeanRequest) -> RequestTrace:
        tracer = self.gw.tracer
        if tracer is not None and tracer.recording:
            trace = server_trace(tracer, req.headers, req.method, req.path)
            trace.set("lanterna.request_id", req.rid)
            return trace
        return pass_through(req.headers)

    async def bridge(self, conn: _Conn, req: LeanRequest) -> bool:
        """Run a cold request through the aiohttp app on an in-memory transport and send what it answers."""
        if conn.transport is None or conn.closed:
            return False
        parts = [b"%s %s HTTP/1.1\r\n" % (req.method.encode("latin-1"), req.url)]
        parts += [b"%s: %s\r\n" % (k, v) for k, v in req.raw_headers if k.lower() not in _HOP]
        parts.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(req.body))
        parts.append(req.body)
        done: asyncio.Future[None] = self.loop.create_future()
        cap = _Capture(conn.transport, done)
        proto = self._aio()
        proto.connection_made(cap)
        try:
            proto.data_received(b"".join(parts))
            async with asyncio.timeout(_BRIDGE_TIMEOUT_S):
                await asyncio.shield(done)
        except TimeoutError:
            log.error("cold_route_timeout", extra={"path": req.path})
            return False
        finally:
            cap.close()
            proto.connection_lost(None)
        out = bytes(cap.buf)
        end = out.find(b"\r\n\r\n")
        if end < 0:
            return False
        keep = req.keep_alive and not self.closing
        lines = [ln for ln in out[:end].split(b"\r\n") if not ln.lower().startswith(b"connection:")]
        if not keep:
            lines.append(b"connection: close")
        conn.transport.write(b"\r\n".join(lines) + out[end:])
        return keep


async def serve_lean(app: web.Application, gw: Gateway, host: str, port: int, *, reuse_port: bool = False,
                     extra_headers: Mapping[str, str] | None = None) -> LeanFront:
    front = LeanFront(app, gw, gw.cfg.gateway.limits, extra_headers=extra_headers)
    try:
        await front.start(host, port, reuse_port=reuse_port)
    except BaseException:
        await front.runner.cleanup()
        raise
    return front
