"""Health checks and model discovery: ``GET /health`` and ``GET /v1/models`` per endpoint.

An endpoint turns unhealthy after ``unhealthy_after`` consecutive failed checks and healthy again on
the first success, so one slow probe does not flap routing. ``/v1/models`` tells which base models and
LoRA adapters (entries with ``parent``) the server serves; requests only reach endpoints serving their
model or adapter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp
import msgspec

from lanterna.endpoints.store import EndpointStore, ModelCard
from lanterna.endpoints.tasks import EndpointTasks
from lanterna.endpoints.types import Endpoint

log = logging.getLogger(__name__)


class _Model(msgspec.Struct):
    id: str
    parent: str | None = None
    max_model_len: int | None = None
    owned_by: str = "vllm"


class _ModelList(msgspec.Struct):
    data: list[_Model] = []


_decode_models = msgspec.json.Decoder(_ModelList).decode


class HealthChecker:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        store: EndpointStore,
        *,
        interval_s: float = 1.0,
        timeout_s: float = 1.0,
        unhealthy_after: int = 3,
        discover_models: bool = True,
        on_change: Callable[[Endpoint, bool], None] | None = None,
    ) -> None:
        self._session = session
        self._store = store
        self._interval_s = interval_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._unhealthy_after = unhealthy_after
        self._discover_models = discover_models
        self._on_change = on_change  # told of every healthy <-> unhealthy transition (the gateway fails over)
        self._failures: dict[str, int] = {}
        self._tasks = EndpointTasks("health")

    def watch(self, ep: Endpoint, *, checked: bool = False) -> None:
        """Check ``ep`` periodically; ``checked``: it was just checked, so the first check waits an interval."""
        if ep.id not in self._tasks:
            self._tasks.start(ep.id, self._loop(ep, checked))

    def unwatch(self, endpoint_id: str) -> None:
        self._tasks.cancel(endpoint_id)

    async def _get(self, url: str) -> bytes | None:
        try:
            async with self._session.get(url, timeout=self._timeout) as resp:
                return await resp.read() if resp.status == 200 else None
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None

    async def check_once(self, ep: Endpoint) -> bool:
        ok = await self._get(f"http://{ep.address}/health") is not None
        if ok and self._discover_models:
            body = await self._get(f"http://{ep.address}/v1/models")
            if body is not None:
                try:
                    models = _decode_models(body).data
                except msgspec.DecodeError:
                    models = None
                if models:
                    self._store.set_models(ep, (ModelCard(m.id, m.parent, m.max_model_len, m.owned_by) for m in models))
        if ok:
            self._failures[ep.id] = 0
            if not ep.healthy:
                log.info("endpoint_healthy", extra={"endpoint": ep.id})
                self._store.set_healthy(ep, True)
                if self._on_change is not None:
                    self._on_change(ep, True)
        else:
            n = self._failures.get(ep.id, 0) + 1
            self._failures[ep.id] = n
            if n >= self._unhealthy_after and ep.healthy:
                log.warning("endpoint_unhealthy", extra={"endpoint": ep.id, "failures": n})
                self._store.set_healthy(ep, False)
                if self._on_change is not None:
                    self._on_change(ep, False)
        return ok

    async def _loop(self, ep: Endpoint, checked: bool) -> None:
        if checked:
            await asyncio.sleep(self._interval_s)
        while True:
            await self.check_once(ep)
            await asyncio.sleep(self._interval_s)

    async def close(self) -> None:
        await self._tasks.close()
