"""The client-facing app's one middleware: request id + error shaping, drain, and authentication.

Why one function and not three stacked middlewares (errors, drain, auth): every layer is another coroutine
frame and ``partial`` call on every request, in a path whose budget is a few hundred microseconds. The
order of the checks:

    x-request-id (client's or new) -> drain: 503 + Retry-After, connection closed (probes and /metrics exempt)
    -> /v1/*: authenticate + charge the key's request rate (401 / 429 before the body is read)
    -> handler; a LanternaError or aiohttp 4xx/5xx anywhere becomes the OpenAI error body (``answer_error``)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from lanterna.gateway.auth import CLIENT_PATH_PREFIX, EdgeAuth, authorize
from lanterna.gateway.middleware import answer_error, new_request_id
from lanterna.gateway.server import Shutdown
from lanterna.obs.logs import REQUEST_ID

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def edge_middleware(shutdown: Shutdown, auth: EdgeAuth) -> Middleware:
    """The middleware for ``web.Application(middlewares=[...])``; ``auth`` is the app's ``EdgeAuth`` (its
    key rings are swapped in place on reload, so holding the object is enough)."""
    exempt = shutdown.exempt

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request.headers.get("x-request-id") or new_request_id()
        token = REQUEST_ID.set(rid)
        admitted = False
        try:
            path = request.path
            if path not in exempt:
                if shutdown.draining:
                    return shutdown.refusal(rid, request)
                shutdown.enter()
                admitted = True
                if path.startswith(CLIENT_PATH_PREFIX):
                    authorize(auth, request)
            resp = await handler(request)
            if not resp.prepared:
                resp.headers["x-request-id"] = rid
            return resp
        except Exception as exc:
            return answer_error(exc, rid, request)
        finally:
            if admitted:
                shutdown.leave()
            REQUEST_ID.reset(token)

    return edge
