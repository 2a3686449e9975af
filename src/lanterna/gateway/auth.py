"""Client and admin authentication for the aiohttp app: who is calling, may they, and at what rate.

    auth = EdgeAuth.from_config(cfg.auth)            # once; app[AUTH] = auth
    middlewares=[edge_middleware(shutdown, auth)]    # gateway.front; principal on request[PRINCIPAL] (/v1/*)
    prepare(): principal_of(request) -> effective_priority / effective_fairness / auth.check_model
    admission: auth.charge_tokens(principal, prompt_estimate + max_tokens)
    admin routes: require_admin(handler) ; metrics: require_admin(handler, unconfigured="open")

A key is read from ``Authorization: Bearer <key>`` or ``x-api-key``. With ``auth.enabled`` false (open mode)
every caller is the anonymous principal, whose priority ceiling is ``auth.anonymous_max_priority``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from lanterna.auth.keys import KeyRing
from lanterna.auth.principal import Principal, anonymous
from lanterna.auth.ratelimit import RateLimiter, Verdict
from lanterna.auth.source import admin_ring, load_keyring, sources_signature
from lanterna.clock import Clock, MonotonicClock
from lanterna.config.model import AuthConfig
from lanterna.errors import (
    ConfigError,
    EndpointNotFound,
    Forbidden,
    KeyRateLimited,
    LanternaError,
    Unauthorized,
)
from lanterna.gateway.header_policy import load_upstream_api_key

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("lanterna_principal", Principal)  # set on /v1/* routes
CLIENT_PATH_PREFIX = "/v1/"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent: ``Authorization: Bearer <key>`` first, else ``x-api-key``."""
    value = headers.get("authorization")
    if value:
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None  # another scheme (Basic ...) is not a key, even if x-api-key is also sent
    return (headers.get("x-api-key") or "").strip() or None


def retry_after(seconds: float) -> str:
    """``Retry-After`` is whole seconds (RFC 9110); round up so a client that obeys it is admitted."""
    return str(max(1, math.ceil(seconds))) if math.isfinite(seconds) else "60"


@dataclass(slots=True)
class EdgeAuth:
    """Key rings, rate limiter and policy; the rings are swapped whole on reload (no partial state)."""

    cfg: AuthConfig
    keys: KeyRing
    admins: KeyRing
    limiter: RateLimiter
    clock: Clock = field(default_factory=MonotonicClock)
    upstream_api_key: str | None = None
    _signature: tuple[tuple[str, int, int], ...] = ()

    @classmethod
    def from_config(cls, cfg: AuthConfig, clock: Clock | None = None,
                    environ: Mapping[str, str] = os.environ) -> EdgeAuth:
        """Load everything now (startup: blocking reads are fine); raises ConfigError."""
        keys = load_keyring(cfg, environ) if cfg.enabled else KeyRing()
        if cfg.enabled and not len(keys):
            raise ConfigError("auth.enabled is true but no keys were found (auth.keys, keys_file, "
                              f"${cfg.keys_env} or secret_dir)")
        try:
            upstream = load_upstream_api_key(cfg.upstream_api_key_env, cfg.upstream_api_key_file, environ)
        except OSError as exc:
            raise ConfigError(f"auth.upstream_api_key_file: {exc.strerror}") from None
        return cls(cfg=cfg, keys=keys, admins=admin_ring(cfg), limiter=RateLimiter(cfg.rate_limit_share),
                   clock=clock or MonotonicClock(), upstream_api_key=upstream, _signature=sources_signature(cfg))

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller's principal; raises ``Unauthorized`` (401) when auth is on and the key is missing or
        unknown. An admin key is not a client key (separate rings: leaking one grants nothing of the other)."""
        if not self.cfg.enabled:
            return anonymous(self.cfg.anonymous_max_priority)
        key = presented_key(headers)
        if key is None:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key'.")
        p = self.keys.lookup(key)
        if p is None:
            raise Unauthorized("Incorrect API key provided.")
        return p

    def is_admin(self, headers: Mapping[str, str]) -> bool:
        key = presented_key(headers)
        return key is not None and self.admins.lookup(key) is not None

    def _refuse(self, p: Principal, v: Verdict) -> KeyRateLimited:
        what = "request" if v.reason == "requests" else "token"
        msg = (f"request needs more tokens than key {p.name!r} may use per minute" if v.reason == "too-large"
               else f"{what} rate limit of key {p.name!r} exceeded; retry after {retry_after(v.retry_after_s)}s")
        return KeyRateLimited(msg, headers={"retry-after": retry_after(v.retry_after_s)})

    def charge_request(self, p: Principal) -> None:
        """One request against ``p``'s request rate; raises ``KeyRateLimited`` (429 + Retry-After)."""
        v = self.limiter.take_request(p, self.clock.now())
        if not v.allowed:
            raise self._refuse(p, v)

    def charge_tokens(self, p: Principal, num_tokens: int) -> None:
        """Prompt estimate + max_tokens against ``p``'s token rate, at admission; raises ``KeyRateLimited``."""
        v = self.limiter.take_tokens(p, num_tokens, self.clock.now())
        if not v.allowed:
            raise self._refuse(p, v)

    @staticmethod
    def check_model(p: Principal, model: str) -> None:
        """403 when the key is limited to other models (checked on the requested *and* the served name)."""
        if not p.may_use(model):
            raise Forbidden(f"this API key may not use model {model!r}", param="model")

    async def reload(self) -> bool:
        """Re-read keys when their files changed; a broken file keeps the old ring (logged). True: swapped."""
        sig = await asyncio.to_thread(sources_signature, self.cfg)
        if sig == self._signature:
            return False
        try:
            keys = await asyncio.to_thread(load_keyring, self.cfg)
        except ConfigError as exc:
            log.error("auth_reload_failed", extra={"error": str(exc)})
            return False
        self.keys, self._signature = keys, sig
        self.limiter.retain({p.key_hash for p in keys.principals()})
        log.info("auth_reloaded", extra={"num_keys": len(keys)})
        return True


AUTH: web.AppKey[EdgeAuth] = web.AppKey("lanterna_auth", EdgeAuth)
OnReject = Callable[[web.Request, LanternaError, Principal | None], None]
# Called with each request the middleware refuses (401/429), so it gets its access-log line like any other
# refused request; set by the app that owns the log (this module does not know the routing state).
ON_REJECT: web.AppKey[OnReject] = web.AppKey("lanterna_auth_on_reject")


_NO_RIGHTS = anonymous(0)


def principal_of(request: web.Request) -> Principal:
    """The caller set by ``authorize``; anonymous (ceiling 0) if the middleware did not run."""
    return request.get(PRINCIPAL) or _NO_RIGHTS


def admit_request(auth: EdgeAuth, p: Principal) -> None:
    """Charge one request to ``p``'s request rate (429 ``KeyRateLimited`` when over it)."""
    if p.requests_per_s is not None:  # unlimited (and anonymous) principals always pass: no limiter call
        auth.charge_request(p)


def authorize(auth: EdgeAuth, request: web.Request) -> None:
    """Authenticate a ``/v1/*`` request and charge its request rate, before its body is read; the principal
    lands on ``request[PRINCIPAL]``. Raises ``Unauthorized`` (401) or ``KeyRateLimited`` (429)."""
    p: Principal | None = None
    try:
        p = auth.authenticate(request.headers)
        admit_request(auth, p)
    except LanternaError as err:
        on_reject = request.app.get(ON_REJECT)
        if on_reject is not None:
            on_reject(request, err, p)  # its access-log line, like any refused request
        raise
    request[PRINCIPAL] = p


def require_admin(handler: Handler, *, unconfigured: str = "off") -> Handler:
    """Wrap an admin/debug handler. With admin keys configured, only an admin key passes (401 otherwise).
    Without any: ``unconfigured="off"`` answers 404 as if the route did not exist, unless
    ``auth.open_admin`` is set; ``"open"`` (for ``/metrics``, so Prometheus works by default) lets all in."""
    if unconfigured not in ("off", "open"):
        raise ValueError("unconfigured must be 'off' or 'open'")

    async def guarded(request: web.Request) -> web.StreamResponse:
        auth = request.app[AUTH]
        if len(auth.admins):
            if not auth.is_admin(request.headers):
                raise Unauthorized("This endpoint needs an admin key.")
        elif unconfigured == "off" and not auth.cfg.open_admin:
            raise EndpointNotFound("Not Found")
        return await handler(request)

    guarded.__name__ = getattr(handler, "__name__", "guarded")
    guarded.__doc__ = handler.__doc__
    return guarded


async def reload_keys(request: web.Request) -> web.Response:
    """``POST /admin/auth/reload`` (register behind ``require_admin``): re-read the key sources now."""
    auth = request.app[AUTH]
    swapped = await auth.reload()
    return web.json_response({"reloaded": swapped, "num_keys": len(auth.keys)})


async def auth_reload_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: poll the key files every ``auth.reload_s`` (0: off) and swap the ring on change."""
    auth = app[AUTH]
    task: asyncio.Task[None] | None = None
    if auth.cfg.enabled and auth.cfg.reload_s > 0 and (auth.cfg.keys_file or auth.cfg.secret_dir):

        async def poll() -> None:
            while True:
                await asyncio.sleep(auth.cfg.reload_s)
                try:
                    await auth.reload()
                except OSError as exc:  # a file vanished mid-read: keep the old ring, try again later
                    log.warning("auth_reload_failed", extra={"error": str(exc)})

        task = asyncio.create_task(poll(), name="auth-reload")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
