"""Optional OpenTelemetry tracing: one server span per request, when ``opentelemetry-api`` is installed.

Off by default (``gateway.tracing``); spans cost CPU on the hot path. Without the package this module
logs once and does nothing, so the gateway never depends on it. Exporters are configured the usual
OpenTelemetry way (environment variables / SDK set-up by the operator).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


def enable_tracing(app: web.Application) -> bool:
    try:
        from opentelemetry import trace  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        log.warning("tracing_unavailable", extra={"reason": "opentelemetry-api is not installed"})
        return False
    tracer = trace.get_tracer("lanterna.gateway")

    @web.middleware
    async def tracing_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        with tracer.start_as_current_span(f"{request.method} {request.path}", kind=trace.SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", request.method)
            span.set_attribute("url.path", request.path)
            rid = request.headers.get("x-request-id")
            if rid:
                span.set_attribute("lanterna.request_id", rid)
            resp: web.StreamResponse = await handler(request)
            span.set_attribute("http.response.status_code", resp.status)
            dest = resp.headers.get("x-gateway-destination-endpoint")
            if dest:
                span.set_attribute("lanterna.endpoint", dest)
            return resp

    app.middlewares.append(tracing_middleware)
    return True
