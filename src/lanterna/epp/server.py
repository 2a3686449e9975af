"""The endpoint picker process: Envoy ``ext_proc`` v3 over ``grpc.aio``, gRPC health, Prometheus metrics.

State and pollers are the HTTP gateway's (``create_gateway`` builds the state: endpoint store, scheduler, flow
control, breakers, metrics, KV index; ``gateway.app.running`` runs health checks, scrapes, KV-event
subscriptions and the config reloader, without upstream pools: Envoy carries the bytes). Each ``Process``
stream is one ``Exchange`` (``epp/exchange.py``) driving the routing core.

Ports (GAIE's defaults): ext_proc 9002, gRPC health 9003 (also served on the ext_proc port, where Envoy's own
gRPC health checks look), metrics 9090 (``/metrics`` from the same ``GatewayMetrics`` registry, plus ``/health``
and ``/ready``). Health services: ``""`` and ``liveness`` always SERVING; ``readiness`` and
``envoy.service.ext_proc.v3.ExternalProcessor`` SERVING while some endpoint is ready.

Endpoint sources: the static ones (config, ``--endpoint``) are in the store before serving; a discovery
source (Kubernetes pods / an InferencePool) is an ``EndpointSource`` run for the server's lifetime, calling
``gw.add_endpoint`` / ``gw.remove_endpoint`` on the same store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from aiohttp import web
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from lanterna.endpoints.types import Endpoint
from lanterna.epp.exchange import Exchange, Modes
from lanterna.gateway import routes
from lanterna.gateway.app import running
from lanterna.gateway.state import GATEWAY, Gateway

log = logging.getLogger(__name__)

EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_STOP_GRACE_S = 2.0


class EndpointSource(Protocol):
    """Feeds the picker's endpoint store while it runs (``gw.add_endpoint`` / ``gw.remove_endpoint``);
    cancelled when the server stops."""

    async def run(self, gw: Gateway) -> None: ...


@dataclass(frozen=True, slots=True)
class EppOptions:
    host: str = "127.0.0.1"
    grpc_port: int = 9002  # 0: any free port (tests)
    health_port: int | None = 9003  # None: health only on the ext_proc port
    metrics_port: int | None = 9090  # None: no metrics listener
    modes: Modes = field(default_factory=Modes)


@dataclass(frozen=True, slots=True)
class EppServer:
    """Bound ports of a running picker."""

    grpc_port: int
    health_port: int | None
    metrics_port: int | None


class ExtProcServicer(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, gw: Gateway, modes: Modes) -> None:
        self._gw = gw
        self._modes = modes

    async def Process(self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        """One stream per proxied request; ``close()`` in ``finally``: Envoy cancelling the stream (client gone,
        upstream reset) settles the request like a finished one."""
        ex = Exchange(self._gw, self._modes)
        try:
            async for req in request_iterator:
                for resp in await ex.on_message(req):
                    await context.write(resp)
        finally:
            await ex.close()


class _Readiness:
    """gRPC health statuses kept in step with endpoint health (one owned task, woken on each transition)."""

    def __init__(self, gw: Gateway, health: HealthServicer) -> None:
        self._gw = gw
        self._health = health
        self._changed = asyncio.Event()

    def on_change(self, _ep: Endpoint, _healthy: bool) -> None:
        self._changed.set()

    async def publish(self) -> None:
        status = _SERVING if self._gw.ready() else _NOT_SERVING
        await self._health.set("liveness", _SERVING)
        for name in ("readiness", EXT_PROC_SERVICE):
            await self._health.set(name, status)

    async def run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self.publish()


async def _supervised(src: EndpointSource, gw: Gateway) -> None:
    """A discovery source that dies is logged, not silently lost (the static endpoints keep serving)."""
    try:
        await src.run(gw)
    except Exception:
        log.exception("epp_endpoint_source_failed", extra={"source": type(src).__name__})


def _grpc_server(max_body_bytes: int) -> grpc.aio.Server:
    limit = max_body_bytes + 1024 * 1024  # BUFFERED mode sends the whole body in one message
    return grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                    ("grpc.max_send_message_length", limit),
                                    ("grpc.so_reuseport", 0)])


def _bind(server: grpc.aio.Server, host: str, port: int) -> int:
    bound: int = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    return bound


async def _metrics_site(gw: Gateway, host: str, port: int) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app[GATEWAY] = gw
    app.router.add_get("/metrics", routes.metrics)  # the gateway's handler: pool gauges refreshed per scrape
    app.router.add_get("/health", routes.health)
    app.router.add_get("/ready", routes.ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner, int(runner.addresses[0][1])


@asynccontextmanager
async def serve_epp(gw: Gateway, opts: EppOptions, sources: Sequence[EndpointSource] = ()
                    ) -> AsyncIterator[EppServer]:
    """Run the picker for the block's duration (raises ``OSError`` when a port cannot be bound)."""
    health = HealthServicer()
    readiness = _Readiness(gw, health)
    max_body = opts.modes.max_body_bytes
    async with running(gw, proxy=False, on_health_change=readiness.on_change):
        await readiness.publish()
        servers: list[grpc.aio.Server] = []
        tasks: list[asyncio.Task[None]] = []
        metrics: web.AppRunner | None = None
        try:
            main = _grpc_server(max_body)
            servers.append(main)
            pb_grpc.add_ExternalProcessorServicer_to_server(ExtProcServicer(gw, opts.modes), main)
            health_pb2_grpc.add_HealthServicer_to_server(health, main)
            grpc_port = _bind(main, opts.host, opts.grpc_port)
            health_port = None
            if opts.health_port is not None:
                hs = _grpc_server(0)
                servers.append(hs)
                health_pb2_grpc.add_HealthServicer_to_server(health, hs)
                health_port = _bind(hs, opts.host, opts.health_port)
            metrics_port = None
            if opts.metrics_port is not None:
                metrics, metrics_port = await _metrics_site(gw, opts.host, opts.metrics_port)
            for s in servers:
                await s.start()
            tasks.append(asyncio.create_task(readiness.run(), name="epp-readiness"))
            tasks.extend(asyncio.create_task(_supervised(src, gw), name=f"epp-source-{i}")
                         for i, src in enumerate(sources))
            log.info("epp_started", extra={"grpc_port": grpc_port, "health_port": health_port,
                                           "metrics_port": metrics_port, "endpoints": [e.id for e in gw.store.all()]})
            yield EppServer(grpc_port, health_port, metrics_port)
        finally:
            await health.enter_graceful_shutdown()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # In-flight streams get a grace period, then are cancelled: each one's finally settles it.
            await asyncio.gather(*(s.stop(_STOP_GRACE_S) for s in servers))
            if metrics is not None:
                await metrics.cleanup()
