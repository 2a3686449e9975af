"""``lanterna sidecar``: the decode pod's proxy for P/D placement ``sidecar`` (llm-d's routing sidecar).

The gateway/EPP picks both endpoints and sends the request to this sidecar with ``x-prefiller-host-port``.
The sidecar then (PROTOCOLS.md section 4):

1. checks the named prefiller against its allow-list (400 malformed, 403 unknown: no request leaves the pod
   for a host an operator did not list; the header is an SSRF vector otherwise);
2. sends the prefill leg: the same body with ``do_remote_decode``, ``max_tokens: 1``, ``stream: false``;
3. sends the decode leg to the local model server with the returned ``kv_transfer_params`` verbatim, and
   relays its answer (streaming or not) to the caller.

A prefill leg that fails (refused connection, timeout, 5xx, no ``kv_transfer_params``) is not an error for the
client: the decode runs without KV params, i.e. the local server prefills (aggregated serving), and the
fallback is counted by reason. A request without the header, or whose body already carries
``do_remote_prefill`` (someone upstream ran the prefill), goes to the decode server unchanged: one prefill per
request. Every other path (``/metrics``, ``/health``, ``/v1/models``...) is proxied as is; the sidecar's own
counters are on ``/sidecar/metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest

from lanterna.config.model import SidecarConfig
from lanterna.errors import InvalidRequest, LanternaError, UpstreamFailed
from lanterna.routing import pd
from lanterna.routing.fields import HDR_PREFILLER, rewrite_body

log = logging.getLogger(__name__)

_HOP = frozenset(("host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
                  "trailer", "proxy-connection", HDR_PREFILLER))
_SKIP_RESPONSE = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"))
_SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("sidecar_session", aiohttp.ClientSession)


@dataclass(slots=True)
class SidecarMetrics:
    registry: CollectorRegistry
    prefill: Counter  # lanterna_sidecar_prefill_total{outcome}

    @classmethod
    def create(cls) -> SidecarMetrics:
        r = CollectorRegistry(auto_describe=True)
        return cls(r, Counter("lanterna_sidecar_prefill_total",
                              "Requests by what the sidecar did about their prefill: ok (remote prefill, decode "
                              "with its KV), a fallback reason (decode prefilled locally), refused, none (no "
                              "x-prefiller-host-port) or already_prefilled.", ("outcome",), registry=r))


class Sidecar:
    """One decode pod's sidecar: allow-list, prefill leg, decode leg (see the module docstring)."""

    def __init__(self, cfg: SidecarConfig, allow: pd.PrefillerAllowList) -> None:
        self.cfg = cfg
        self.allow = allow
        self.metrics = SidecarMetrics.create()
        self._outcomes: dict[str, Any] = {}  # resolved label children: counted per request
        self._timeout = aiohttp.ClientTimeout(total=cfg.request_timeout_s, sock_connect=cfg.connect_s)
        self._prefill_timeout = aiohttp.ClientTimeout(total=cfg.prefill_timeout_s, sock_connect=cfg.connect_s)

    def count(self, outcome: str) -> None:
        c = self._outcomes.get(outcome)
        if c is None:
            c = self._outcomes[outcome] = self.metrics.prefill.labels(outcome)
        c.inc()

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, handler_args={"handler_cancellation": True})
        app.router.add_post("/v1/completions", self.inference)
        app.router.add_post("/v1/chat/completions", self.inference)
        app.router.add_get("/sidecar/metrics", self.own_metrics)
        app.router.add_route("*", "/{tail:.*}", self.passthrough)
        app.cleanup_ctx.append(self._session_ctx)
        return app

    async def _session_ctx(self, app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(auto_decompress=False) as s:
            app[_SESSION] = s
            yield

    # -- handlers ------------------------------------------------------------------------------------------------
    async def inference(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = _forward(request)
        hdr = request.headers.get(HDR_PREFILLER)
        if hdr is None:
            self.count("none")
            return await self._relay(request, body, headers)
        try:
            target = self.allow.check(hdr)
            data = msgspec.json.decode(body)
            if not isinstance(data, dict):
                raise InvalidRequest("the request body must be a JSON object")
        except msgspec.DecodeError:
            return _error(InvalidRequest("the request body is not valid JSON"), "refused", self)
        except LanternaError as err:
            return _error(err, "refused", self)
        if pd.already_prefilled(data):
            self.count("already_prefilled")
            return await self._relay(request, body, headers)
        kv, outcome = await self._prefill(request, target, body, headers)
        self.count(outcome)
        return await self._relay(request, body if kv is None else rewrite_body(body, kv_transfer_params=kv), headers)

    async def _prefill(self, request: web.Request, target: str, body: bytes, headers: dict[str, str]
                       ) -> tuple[dict[str, object] | None, str]:
        """The prefill leg; (kv_transfer_params, "ok") or (None, the fallback reason)."""
        chat = request.path.endswith("/chat/completions")
        pbody = rewrite_body(body, **pd.prefill_fields(chat))
        try:
            async with request.app[_SESSION].post(f"http://{target}{request.path}", data=pbody, headers=headers,
                                                  timeout=self._prefill_timeout) as r:
                answer = await r.read()
                status = r.status
        except TimeoutError:
            log.warning("sidecar_prefill_failed", extra={"prefiller": target, "reason": "timeout"})
            return None, "timeout"
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("sidecar_prefill_failed", extra={"prefiller": target, "reason": "connect", "error": str(exc)})
            return None, "connect"
        if status != 200:
            log.warning("sidecar_prefill_failed", extra={"prefiller": target, "status": status})
            return None, "http_5xx" if status >= 500 else "http_4xx"
        kv = pd.kv_params_of(answer)
        return (kv, "ok") if kv is not None else (None, "no_kv_params")

    async def _relay(self, request: web.Request, body: bytes, headers: dict[str, str]) -> web.StreamResponse:
        """Send to the local model server and copy its answer back; leaving early closes the upstream (vLLM
        aborts the request)."""
        url = f"http://{self.cfg.decode}{request.path_qs}"
        out: web.StreamResponse | None = None
        try:
            async with request.app[_SESSION].request(request.method, url, data=body, headers=headers,
                                                     timeout=self._timeout) as up:
                out = web.StreamResponse(status=up.status, headers={k: v for k, v in up.headers.items()
                                                                    if k.lower() not in _SKIP_RESPONSE})
                await out.prepare(request)
                async for chunk in up.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if out is not None:  # mid-answer (caller left, or the server died): the stream just ends
                return out
            return _error(UpstreamFailed(f"the local model server is unreachable: {exc}"), None, self)

    async def passthrough(self, request: web.Request) -> web.StreamResponse:
        return await self._relay(request, await request.read(), _forward(request))

    async def own_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def _forward(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.lower() not in _HOP}


def _error(err: LanternaError, outcome: str | None, sidecar: Sidecar) -> web.Response:
    if outcome is not None:
        sidecar.count(outcome)
    return web.Response(status=err.status, body=msgspec.json.encode(err.body()), content_type="application/json",
                        headers=err.headers)
