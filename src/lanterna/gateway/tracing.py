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
from collections.abc import Awaitable, Callable

from aiohttp import web

from lanterna.errors import LanternaError
from lanterna.obs.tracing import NO_TRACE, TRACEPARENT, RequestTrace, Tracer

_TRACE = "lanterna.trace"  # request-scoped key (aiohttp request mapping)
_PASS_THROUGH = Tracer(enabled=False)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_trace(request: web.Request) -> RequestTrace:
    """The request's trace: the middleware's when tracing is on, else a pass-through one."""
    trace: RequestTrace | None = request.get(_TRACE)
    if trace is None:
        if TRACEPARENT not in request.headers:  # most requests: nothing to forward, nothing to build
            return NO_TRACE
        trace = _PASS_THROUGH.start_request(request.headers)
    return trace


def enable_tracing(app: web.Application, tracer: Tracer | None = None) -> bool:
    """Install the span middleware; False (and nothing installed) when OpenTelemetry is missing."""
    tracer = tracer or Tracer(enabled=True)
    if not tracer.recording:
        return False

    @web.middleware
    async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        trace = tracer.start_request(request.headers, f"{request.method} {request.path}")
        trace.set("http.request.method", request.method)
        trace.set("url.path", request.path)
        request[_TRACE] = trace
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
