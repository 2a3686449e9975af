"""The gateway's one error edge and request-id stamping.

Every response carries ``x-request-id`` (the client's, or a new one); the id lives in a ContextVar for
the logs and is forwarded upstream. ``LanternaError`` becomes the OpenAI/vLLM error body; aiohttp's own
404/405/413 become OpenAI-shaped errors too (the simulator keeps vLLM's ``{"detail"}`` for parity; a
gateway client gets one shape for everything); anything else is logged with the request id and
answered as a 500 without a traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from lanterna.errors import (
    EndpointNotFound,
    InternalError,
    LanternaError,
    MethodNotSupported,
    PayloadTooLarge,
)
from lanterna.obs.logs import REQUEST_ID

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_counter = 0
_prefix = os.urandom(4).hex()


def new_request_id() -> str:
    """Unique per process and cheap (no uuid4 syscall per request)."""
    global _counter
    _counter += 1
    return f"{_prefix}-{_counter:x}"


def error_response(err: LanternaError, request_id: str | None) -> web.Response:
    headers = dict(err.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return web.Response(status=err.status, body=msgspec.json.encode(err.body()), content_type="application/json",
                        headers=headers)


def http_error(exc: web.HTTPException) -> LanternaError:
    """aiohttp's own HTTP errors (404, 405, 413) as the vLLM-shaped errors a client gets."""
    if isinstance(exc, web.HTTPNotFound):
        return EndpointNotFound(f"Not Found: {exc.status} no route for this path", param="path")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        err: LanternaError = MethodNotSupported(f"Method Not Allowed: {exc.method}", param="method")
        err.headers["allow"] = ",".join(sorted(exc.allowed_methods))
        return err
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge(f"request body too large: {exc.text or 'over the gateway limit'}", param="body")
    err = LanternaError(exc.reason)
    err.status = exc.status  # type: ignore[misc]
    return err


def answer_error(exc: Exception, rid: str, request: web.BaseRequest) -> web.Response:
    """The error edge's answer to ``exc`` (call it from an ``except Exception`` block): a ``LanternaError`` or
    aiohttp's 4xx/5xx in the OpenAI shape; anything else logged with the request id and answered 500.
    A redirect (``HTTPException`` under 400) is re-raised for aiohttp to send."""
    if isinstance(exc, web.HTTPException) and exc.status < 400:
        raise exc
    return error_response(as_error(exc, rid, request.path), rid)


def as_error(exc: Exception, rid: str, path: str) -> LanternaError:
    """What a client is told about ``exc``: itself when a ``LanternaError``, aiohttp's 4xx/5xx in our shape,
    anything else logged with the request id and turned into a 500 that names only that id."""
    if isinstance(exc, LanternaError):
        return exc
    if isinstance(exc, web.HTTPException):
        return http_error(exc)
    log.error("unhandled_error", exc_info=exc, extra={"path": path})
    return InternalError(f"internal error (request id {rid})")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id + error shaping alone (the metrics listener, small apps); the client-facing gateway runs
    ``gateway.front.edge_middleware``, which does this plus drain and auth in one frame."""
    rid = request.headers.get("x-request-id") or new_request_id()
    token = REQUEST_ID.set(rid)
    try:
        resp = await handler(request)
        if not resp.prepared:
            resp.headers["x-request-id"] = rid
        return resp
    except Exception as exc:
        return answer_error(exc, rid, request)
    finally:
        REQUEST_ID.reset(token)
