"""aiohttp glue for ``lanterna.obs.tracing``: one ``RequestTrace`` per HTTP request.

With ``gateway.tracing: true`` (and the ``[otel]`` extra) ``enable_tracing`` adds a middleware that opens
the SERVER span from the client's ``traceparent`` and ends it with the response status on every exit
path (success, error, cancellation). Handlers get the request's trace with ``request_trace(request)`` and
hand it to the routing core, which opens ``admission``/``schedule``/``upstream`` spans and injects the
context into the upstream headers. Without the middleware ``request_trace`` costs a header read and
returns a pass-through trace (forwards a valid client ``traceparent`` unchanged, records nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from lanterna.errors import LanternaError
from lanterna.obs.tracing import NO_TRACE, TRACEPARENT, RequestTrace, Tracer

_TRACE = "lanterna.trace"  # request-scoped key (aiohttp request mapping)
_PASS_THROUGH = Tracer(enabled=False)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_trace(request: web.Request) -> RequestTrace:
    """The request's trace: the middleware's when tracing is on, else a pass-through one."""
    trace: RequestTrace | None = request.get(_TRACE)
    return trace if trace is not None else pass_through(request.headers)


def pass_through(headers: Mapping[str, str]) -> RequestTrace:
    """Tracing off: forward a client's valid ``traceparent`` unchanged, record nothing."""
    if TRACEPARENT not in headers:  # most requests: nothing to forward, nothing to build
        return NO_TRACE
    return _PASS_THROUGH.start_request(headers)


def server_trace(tracer: Tracer, headers: Mapping[str, str], method: str, path: str) -> RequestTrace:
    """Tracing on: the request's SERVER span, a child of the client's ``traceparent`` when it sent one."""
    trace = tracer.start_request(headers, f"{method} {path}")
    trace.set("http.request.method", method)
    trace.set("url.path", path)
    return trace


def enable_tracing(app: web.Application, tracer: Tracer | None = None) -> bool:
    """Install the span middleware; False (and nothing installed) when OpenTelemetry is missing."""
    tracer = tracer or Tracer(enabled=True)
    if not tracer.recording:
        return False

    @web.middleware
    async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        trace = request[_TRACE] = server_trace(tracer, request.headers, request.method, request.path)
        status: int | None = None
        error: str | None = None
        try:
            resp = await handler(request)
            status = resp.status
            rid = resp.headers.get("x-request-id")
            if rid:
                trace.set("lanterna.request_id", rid)
            return resp
        except asyncio.CancelledError:
            error = "cancelled"
            raise
        except LanternaError as exc:  # the outer error middleware turns it into the response
            status, error = exc.status, exc.error_type
            raise
        except web.HTTPException as exc:
            status = exc.status
            raise
        except Exception as exc:
            error = type(exc).__name__
            raise
        finally:
            trace.end(status=status, error=error)

    # NOTE: appended after (inside) the error middleware: errors pass through here still as exceptions.
    app.middlewares.append(tracing_middleware)
    return True
