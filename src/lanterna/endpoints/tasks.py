"""One long-lived task per endpoint, owned in one place (health checks, metric scrapes)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class EndpointTasks:
    """Start at most one task per endpoint id; cancel one on unwatch, all on close (and await them)."""

    __slots__ = ("_prefix", "_tasks")

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def __contains__(self, endpoint_id: object) -> bool:
        return endpoint_id in self._tasks

    def start(self, endpoint_id: str, coro: Coroutine[Any, Any, None]) -> None:
        if endpoint_id in self._tasks:
            coro.close()  # never awaited: close it so no "coroutine was never awaited" warning
            return
        self._tasks[endpoint_id] = asyncio.get_running_loop().create_task(coro, name=f"{self._prefix}:{endpoint_id}")

    def cancel(self, endpoint_id: str) -> None:
        task = self._tasks.pop(endpoint_id, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
