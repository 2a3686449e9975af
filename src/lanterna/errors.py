"""The one error tree a client can see.

Each class fixes its HTTP status and OpenAI error ``type`` string; one gateway/server middleware turns a
``LanternaError`` into vLLM's body ``{"error": {"message", "type", "param", "code"}}``. No other code builds
error JSON.

    LanternaError
    +-- InvalidRequest (400, BadRequestError)
    |   +-- ValidationFailed (400, "Bad Request": vLLM's schema-validation flavour)
    |   +-- PayloadTooLarge (413)
    |   +-- RequestTimeout (408: headers or body not received in time)
    |   +-- UnsupportedMediaType (415: unknown content-encoding)
    |   +-- HeadersTooLarge (431)
    +-- Unauthorized (401, invalid_request_error / invalid_api_key, as OpenAI)
    +-- Forbidden (403, permission_error / model_not_allowed)
    +-- ModelNotFound (404, NotFoundError)
    +-- EndpointNotFound (404, the gateway's unknown path, OpenAI shape)
    +-- MethodNotSupported (405, the gateway's wrong method, OpenAI shape)
    +-- RouteNotFound (404, plain {"detail": ...} like FastAPI: the simulator's vLLM parity)
    +-- MethodNotAllowed (405, plain {"detail": ...})
    +-- RateLimited (429, shed or over capacity)
    |   +-- KeyRateLimited (429, a key's request/token rate; code rate_limit_exceeded)
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
    error_code: ClassVar[str | None] = None  # OpenAI's string code where one exists; else the HTTP status

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The OpenAI/vLLM error body; ``code`` is the HTTP status, as vLLM sends it."""
        code = self.error_code if self.error_code is not None else self.status
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": code}}


class InvalidRequest(LanternaError):
    status = 400
    error_type = "BadRequestError"


class ValidationFailed(InvalidRequest):
    """Schema validation failure; vLLM reports these with type "Bad Request"."""

    error_type = "Bad Request"


class PayloadTooLarge(InvalidRequest):
    status = 413
    error_type = "BadRequestError"


class RequestTimeout(InvalidRequest):
    status = 408


class UnsupportedMediaType(InvalidRequest):
    status = 415


class HeadersTooLarge(InvalidRequest):
    status = 431


class Unauthorized(LanternaError):
    """Missing or unknown API key; OpenAI's exact type and code, so SDKs raise AuthenticationError."""

    status = 401
    error_type = "invalid_request_error"
    error_code = "invalid_api_key"

    def __init__(self, message: str = "Invalid or missing API key.", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault("www-authenticate", "Bearer")


class Forbidden(LanternaError):
    status = 403
    error_type = "permission_error"
    error_code = "model_not_allowed"


class ModelNotFound(LanternaError):
    status = 404
    error_type = "NotFoundError"


class PlainDetailError(LanternaError):
    """FastAPI-style errors: vLLM answers unknown paths and wrong methods with ``{"detail": ...}``."""

    def body(self) -> dict[str, Any]:
        return {"detail": self.message}


class EndpointNotFound(LanternaError):
    status = 404
    error_type = "NotFoundError"


class MethodNotSupported(LanternaError):
    status = 405
    error_type = "MethodNotAllowed"


class RouteNotFound(PlainDetailError):
    status = 404
    error_type = "NotFoundError"


class MethodNotAllowed(PlainDetailError):
    status = 405
    error_type = "MethodNotAllowed"


class RateLimited(LanternaError):
    status = 429
    error_type = "RateLimitError"


class KeyRateLimited(RateLimited):
    """A key's own request or token rate; ``Retry-After`` says when enough budget has refilled."""

    error_code = "rate_limit_exceeded"


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
