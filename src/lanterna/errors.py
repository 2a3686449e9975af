"""The one error tree a client can see.

Each class fixes its HTTP status and OpenAI error ``type`` string; one gateway/server middleware turns a
``LanternaError`` into vLLM's body ``{"error": {"message", "type", "param", "code"}}``. No other code builds
error JSON.

    LanternaError
    +-- InvalidRequest (400, BadRequestError)
    |   +-- ValidationFailed (400, "Bad Request": vLLM's schema-validation flavour)
    |   +-- PayloadTooLarge (413)
    +-- ModelNotFound (404, NotFoundError)
    +-- RouteNotFound (404, plain {"detail": ...} like FastAPI)
    +-- MethodNotAllowed (405, plain {"detail": ...})
    +-- RateLimited (429, shed or over capacity)
    +-- ServiceUnavailable (503)
    |   +-- QueueTimeout (503)
    |   +-- NoCapacity (503)
    +-- UpstreamFailed (502)
    +-- UpstreamTimeout (504)
    +-- InternalError (500)
"""

from __future__ import annotations

from typing import Any, ClassVar


class LanternaError(Exception):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "InternalServerError"

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The OpenAI/vLLM error body; ``code`` is the HTTP status, as vLLM sends it."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.status}}


class InvalidRequest(LanternaError):
    status = 400
    error_type = "BadRequestError"


class ValidationFailed(InvalidRequest):
    """Schema validation failure; vLLM reports these with type "Bad Request"."""

    error_type = "Bad Request"


class PayloadTooLarge(InvalidRequest):
    status = 413
    error_type = "BadRequestError"


class ModelNotFound(LanternaError):
    status = 404
    error_type = "NotFoundError"


class PlainDetailError(LanternaError):
    """FastAPI-style errors: vLLM answers unknown paths and wrong methods with ``{"detail": ...}``."""

    def body(self) -> dict[str, Any]:
        return {"detail": self.message}


class RouteNotFound(PlainDetailError):
    status = 404
    error_type = "NotFoundError"


class MethodNotAllowed(PlainDetailError):
    status = 405
    error_type = "MethodNotAllowed"


class RateLimited(LanternaError):
    status = 429
    error_type = "RateLimitError"


class ServiceUnavailable(LanternaError):
    status = 503
    error_type = "ServiceUnavailableError"


class QueueTimeout(ServiceUnavailable):
    pass


class NoCapacity(ServiceUnavailable):
    pass


class UpstreamFailed(LanternaError):
    status = 502
    error_type = "BadGatewayError"


class UpstreamTimeout(LanternaError):
    status = 504
    error_type = "GatewayTimeoutError"


class InternalError(LanternaError):
    status = 500
    error_type = "InternalServerError"


class ConfigError(Exception):
    """A configuration file or flag is invalid; apps print it and exit 2, never a traceback."""
