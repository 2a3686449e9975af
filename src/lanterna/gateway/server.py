"""Serving with limits: header size/count caps answered as 431 JSON, a header read timeout, OpenAI-shaped
protocol errors, and graceful shutdown.

aiohttp bounds header *size* (``max_line_size``, ``max_field_size``, ``max_headers``) but not header *time*:
a client that sends half a request line and then trickles a byte every few seconds is only closed by the
keep-alive timer. ``EdgeRequestHandler`` adds a header deadline: armed when a connection opens and when the
first byte of a later request arrives, disarmed when the parser completes the request's headers; at the
deadline the connection gets a 408 JSON (if it sent anything) and is closed. Body time is bounded by
``edge.read_body`` (408), after which ``lingering_s`` bounds the unread rest. Its ``handle_error`` replaces
aiohttp's plain-text 400 (which echoes the offending bytes) with the OpenAI error body.

    runner = await serve_edge(app, host, port, cfg.gateway.limits)   # instead of gateway.app.serve
    ...SIGTERM -> await app[SHUTDOWN].drain(limits.drain_timeout_s); await runner.cleanup()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
from aiohttp import web, web_protocol
from aiohttp.http_exceptions import BadHttpMessage, ContentEncodingError, LineTooLong

from lanterna.config.model import EdgeLimitsConfig
from lanterna.errors import (
    HeadersTooLarge,
    InternalError,
    InvalidRequest,
    LanternaError,
    RequestTimeout,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from lanterna.gateway.auth import CLIENT_PATH_PREFIX, ON_REJECT
from lanterna.gateway.middleware import error_response

log = logging.getLogger(__name__)


def headers_too_large() -> HeadersTooLarge:
    return HeadersTooLarge("Request header fields too large (size or count over the gateway's limit).")


def _protocol_error(status: int, exc: BaseException | None) -> LanternaError:
    if isinstance(exc, LineTooLong) or (isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message):
        return headers_too_large()
    if isinstance(exc, ContentEncodingError) or "content-encoding" in str(exc).lower():
        return UnsupportedMediaType("Unsupported content-encoding; use gzip, deflate or none.",
                                    param="content-encoding")  # e.g. br without the Brotli package
    if status < 500:
        return InvalidRequest("Malformed HTTP request.")  # never echo the client's bytes back
    return InternalError("internal error")


def raw_error(err: LanternaError) -> bytes:
    """A complete HTTP/1.1 error response, for when there is no request object to answer through."""
    body = msgspec.json.encode(err.body())
    head = (f"HTTP/1.1 {err.status} {type(err).__name__}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


LATE_S = 0.1  # a deadline timer this late means the event loop is overloaded (both servers)
_GRACE_S = 0.05  # re-check after one socket poll (a positive delay: libuv runs 0-delay timers before polling)
MAX_GRACE = 40  # re-checks granted to one deadline for the loop's lateness


class EdgeRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection protocol plus a header deadline and JSON error pages (see module doc)."""

    def __init__(self, manager: web.Server, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._hdr_handle: asyncio.TimerHandle | None = None
        self._hdr_count = 0  # requests parsed when the deadline was armed
        self._hdr_got_bytes = False
        self._hdr_when = 0.0  # loop time the deadline was due
        self._hdr_grace = 0  # re-checks granted because the event loop itself was late

    def _arm(self, got_bytes: bool) -> None:
        self._hdr_count = self._request_count
        self._hdr_got_bytes = got_bytes
        self._hdr_grace = 0
        self._hdr_handle = self._loop.call_later(self._header_timeout_s, self._header_deadline)
        self._hdr_when = self._hdr_handle.when()

    def _disarm(self) -> None:
        if self._hdr_handle is not None:
            self._hdr_handle.cancel()
            self._hdr_handle = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm(False)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        idle = not self._request_in_progress and not self._messages
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._disarm()  # the headers of a request are complete; body time is read_body's job
        elif data:
            if self._hdr_handle is None and idle:
                self._arm(True)  # first bytes of the next request on a kept-alive connection
            else:
                self._hdr_got_bytes = True

    def _header_deadline(self) -> None:
        self._hdr_handle = None
        transport = self.transport
        if self._request_count != self._hdr_count or transport is None or transport.is_closing():
            return
        # NOTE: under overload the loop runs late, and libuv (uvloop) runs due timers *before* polling sockets:
        # the rest of the head may be sitting unread in the socket. A deadline that fired late is the server's
        # fault, not the client's: re-check after one poll (bounded), so only clients that are really slow go.
        late = self._loop.time() - self._hdr_when
        if late > LATE_S and self._hdr_grace < MAX_GRACE:
            self._hdr_grace += 1
            self._hdr_handle = self._loop.call_later(_GRACE_S, self._header_deadline)
            self._hdr_when = self._hdr_handle.when()
            return
        if self._hdr_got_bytes:
            err = RequestTimeout(f"request headers not received within {self._header_timeout_s:g}s")
            transport.write(raw_error(err))
        log.debug("header_timeout", extra={"peer": str(self.peername)})
        self.force_close()  # closes the transport after flushing the 408

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Protocol-level errors (bad request line, oversized headers, handler crash) in the OpenAI shape."""
        err = _protocol_error(status, exc)
        if err.status >= 500:
            self.log_exception("Error handling request", exc_info=exc)
        else:
            log.debug("bad_http_request", extra={"status": err.status, "error": str(exc)})
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        resp = error_response(err, None)
        resp.force_close()
        return resp


class EdgeServer(web.Server):
    """``web.Server`` whose connections are ``EdgeRequestHandler``s."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s

    def __call__(self) -> web_protocol.RequestHandler:
        return EdgeRequestHandler(self, loop=self._loop, header_timeout_s=self._header_timeout_s, **self._kwargs)


class EdgeAppRunner(web.AppRunner):
    """``AppRunner`` that serves through ``EdgeServer`` (same startup/cleanup; only the protocol differs)."""

    def __init__(self, app: web.Application, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout_s = header_timeout_s

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs on_startup / cleanup_ctx like AppRunner
        # NOTE: web.Server keeps its handler kwargs in _kwargs; copy them into the edge server.
        return EdgeServer(plain.request_handler, request_factory=plain.request_factory,
                          handler_cancellation=plain.handler_cancellation, loop=asyncio.get_running_loop(),
                          header_timeout_s=self._header_timeout_s, **plain._kwargs)


def runner_for(app: web.Application, limits: EdgeLimitsConfig) -> EdgeAppRunner:
    return EdgeAppRunner(app, header_timeout_s=limits.header_timeout_s, handler_cancellation=True, access_log=None,
                         max_line_size=limits.max_line_size, max_field_size=limits.max_field_size,
                         max_headers=limits.max_headers, keepalive_timeout=limits.keepalive_timeout_s,
                         lingering_time=limits.lingering_s, shutdown_timeout=max(1.0, limits.drain_timeout_s))


async def serve_edge(app: web.Application, host: str, port: int, limits: EdgeLimitsConfig, *,
                     reuse_port: bool = False) -> web.AppRunner:
    """Start serving ``app`` with the edge limits; the caller awaits shutdown and calls ``runner.cleanup()``.
    ``reuse_port``: SO_REUSEPORT, for ``--workers N`` processes sharing one port."""
    runner = runner_for(app, limits)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True, reuse_port=reuse_port)
    await site.start()
    return runner


# --- graceful shutdown -------------------------------------------------------------------------------------


class Shutdown:
    """Readiness off -> refuse new requests (503 + Retry-After, connection closed) -> wait for in-flight
    requests (streams included: a handler returns when its stream ends) up to a deadline.

    ``gateway.front.edge_middleware`` admits (``enter``/``leave``) and refuses (``refusal``); answer ``/ready``
    503 while ``draining``."""

    __slots__ = ("_idle", "_in_flight", "draining", "exempt", "retry_after_s")

    def __init__(self, retry_after_s: int = 5, exempt: frozenset[str] = frozenset(("/health", "/ready", "/metrics"))):
        self.retry_after_s = retry_after_s
        self.exempt = exempt  # probes and scrapes keep working while draining
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def refusal(self, request_id: str | None, request: web.Request | None = None) -> web.Response:
        """The 503 (Retry-After, connection closed) for a request that arrives while draining; an inference
        request still gets its access-log line (``ON_REJECT``)."""
        err = self.refusal_error()
        if request is not None and request.path.startswith(CLIENT_PATH_PREFIX):
            on_reject = request.app.get(ON_REJECT)
            if on_reject is not None:
                on_reject(request, err, None)
        resp = error_response(err, request_id)
        resp.force_close()
        return resp

    def refusal_error(self) -> ServiceUnavailable:
        return ServiceUnavailable("The gateway is shutting down; retry on another instance.",
                                  headers={"retry-after": str(self.retry_after_s)})

    def enter(self) -> None:
        """A request was admitted; pair with exactly one ``leave``."""
        self._in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def drain(self, timeout_s: float) -> int:
        """Stop admitting and wait up to ``timeout_s`` for in-flight requests; returns how many remain
        (the caller's ``runner.cleanup()`` then cancels them)."""
        self.draining = True
        log.info("drain_started", extra={"in_flight": self._in_flight, "timeout_s": timeout_s})
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            log.warning("drain_deadline", extra={"in_flight": self._in_flight})
        return self._in_flight


SHUTDOWN: web.AppKey[Shutdown] = web.AppKey("lanterna_shutdown", Shutdown)
# Headers added to every response (``--workers``: which worker answered); aiohttp routes get them from the
# app's ``on_response_prepare`` signal, the lean front from this key.
RESPONSE_HEADERS: web.AppKey[dict[str, str]] = web.AppKey("lanterna_response_headers", dict)


class Serving(Protocol):
    """A started server (``web.AppRunner`` or the lean front): ``cleanup()`` stops it and the app."""

    async def cleanup(self) -> None: ...


def build_metrics_app(render: Callable[[], tuple[bytes, str]]) -> web.Application:
    """The small app for ``gateway.metrics_port``: ``GET /metrics`` only. ``render()`` returns the body and
    its content type (the gateway's Prometheus exposition). Serve it with ``serve_edge``."""
    from lanterna.gateway.middleware import error_middleware

    async def metrics(_request: web.Request) -> web.Response:
        body, content_type = render()
        resp = web.Response(body=body)
        resp.headers["content-type"] = content_type
        return resp

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/metrics", metrics)
    return app
