"""EndpointTasks: one task per endpoint, cancelled on unwatch and on close."""

from __future__ import annotations

import asyncio

from lanterna.endpoints.tasks import EndpointTasks


async def test_one_task_per_endpoint_cancel_and_close() -> None:
    started: list[str] = []
    gate = asyncio.Event()

    async def loop(name: str) -> None:
        started.append(name)
        await gate.wait()

    tasks = EndpointTasks("t")
    tasks.start("a", loop("a"))
    tasks.start("a", loop("a-again"))  # ignored (and closed: no never-awaited warning)
    tasks.start("b", loop("b"))
    await asyncio.sleep(0)  # let both run to their first await
    assert started == ["a", "b"] and "a" in tasks and "c" not in tasks
    tasks.cancel("a")
    assert "a" not in tasks
    await tasks.close()
    assert "b" not in tasks
