"""FlowController (async adapter): slots freed on every exit path, no lost wakeups, errors carry llm-d headers."""

from __future__ import annotations

import asyncio
import random

import pytest

from lanterna.errors import QueueTimeout, RateLimited
from lanterna.routing.flow import DROPPED_REASON_HEADER, FlowConfig, FlowController, FlowRequest


class Sat:
    def __init__(self) -> None:
        self.on = False

    def __call__(self) -> bool:
        return self.on


def req(rid: str, fid: str = "default", prio: int = 0) -> FlowRequest:
    return FlowRequest(rid, fairness_id=fid, priority=prio, model="m")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_fast_path_and_release_on_exit() -> None:
    flow = FlowController(FlowConfig(max_concurrency=2))
    async with flow.admit(req("a")) as ticket:
        assert ticket.request.request_id == "a" and ticket.wait_s == 0.0 and flow.in_flight == 1
    assert flow.in_flight == 0


async def test_error_inside_block_frees_slot() -> None:
    flow = FlowController(FlowConfig(max_concurrency=1))
    with pytest.raises(ValueError):
        async with flow.admit(req("a")):
            raise ValueError("upstream blew up")
    assert flow.in_flight == 0


async def test_many_concurrent_tasks_no_lost_wakeups() -> None:
    """600 tasks through 7 slots with random yields and cancellations: all finish, the cap holds, all freed."""
    flow = FlowController(FlowConfig(max_concurrency=7, max_queue_len=10_000))
    rng = random.Random(7)
    running = peak = done = 0

    async def one(i: int) -> None:
        nonlocal running, peak, done
        async with flow.admit(req(str(i), fid=f"t{i % 5}", prio=i % 3)):
            running += 1
            peak = max(peak, running)
            for _ in range(rng.randrange(4)):
                await asyncio.sleep(0)
            running -= 1
        done += 1

    tasks = [asyncio.create_task(one(i)) for i in range(600)]
    await asyncio.sleep(0)
    victims = rng.sample(tasks, 60)
    for t in victims:
        t.cancel()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=20)
    cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
    assert done + cancelled == 600 and cancelled > 0
    assert peak == 7 and flow.in_flight == 0 and flow.num_queued == 0


async def test_cancelled_waiter_leaves_queue_at_once() -> None:
    flow = FlowController(FlowConfig(max_concurrency=1))
    gate = asyncio.Event()

    async def hold() -> None:
        async with flow.admit(req("holder")):
            await gate.wait()

    holder = asyncio.create_task(hold())
    await settle()
    waiter = asyncio.create_task(flow.admit(req("w")).__aenter__())
    await settle()
    assert flow.num_queued == 1
    waiter.cancel()
    await settle()
    assert flow.num_queued == 0 and flow.stats().dropped["cancelled"] == 1
    gate.set()
    await holder
    assert flow.in_flight == 0


async def test_slot_granted_to_a_cancelled_waiter_is_passed_on() -> None:
    flow = FlowController(FlowConfig(max_concurrency=1))
    first = flow.admit(req("first"))
    await first.__aenter__()
    second_task = asyncio.create_task(flow.admit(req("second")).__aenter__())
    third = flow.admit(req("third"))
    third_task = asyncio.create_task(third.__aenter__())
    await settle()
    await first.__aexit__(None, None, None)  # grants "second" before its task resumes ...
    second_task.cancel()  # ... and its client leaves in the same instant
    await settle()
    assert second_task.cancelled()
    ticket = await asyncio.wait_for(third_task, 5)
    assert ticket.request.request_id == "third" and flow.in_flight == 1
    await third.__aexit__(None, None, None)
    assert flow.in_flight == 0


async def test_queue_ttl_raises_queue_timeout() -> None:
    flow = FlowController(FlowConfig(max_concurrency=1, queue_ttl_s=0.02))
    async with flow.admit(req("holder")):
        with pytest.raises(QueueTimeout) as err:
            async with flow.admit(req("late")):
                pass
    assert err.value.status == 503 and err.value.headers[DROPPED_REASON_HEADER] == "rejected-ttl-expired"
    assert flow.num_queued == 0 and flow.stats().dropped["ttl_expired"] == 1


@pytest.mark.parametrize(
    ("prio", "holding"), [(-1, True), (0, False)], ids=["sheddable", "nothing-in-flight"]
)
async def test_saturation_rejects_with_429(prio: int, holding: bool) -> None:
    sat = Sat()
    flow = FlowController(FlowConfig(max_concurrency=8, retry_after_s=2.5), saturated=sat)
    holder = flow.admit(req("holder"))
    if holding:
        await holder.__aenter__()
    sat.on = True
    with pytest.raises(RateLimited) as err:
        async with flow.admit(req("x", prio=prio)):
            pass
    assert err.value.status == 429
    assert err.value.headers == {DROPPED_REASON_HEADER: "rejected-saturated", "Retry-After": "3"}


async def test_queue_full_evicts_sheddable_waiter() -> None:
    flow = FlowController(FlowConfig(max_concurrency=1, max_queue_len=1))
    async with flow.admit(req("holder")):
        shed = asyncio.create_task(flow.admit(req("s", prio=-1)).__aenter__())
        await settle()
        important = asyncio.create_task(flow.admit(req("i", prio=1)).__aenter__())
        with pytest.raises(RateLimited):
            await shed
        assert flow.num_queued == 1
    ticket = await important
    assert ticket.request.request_id == "i"
    flow.release(ticket)
    assert flow.in_flight == 0


async def test_saturation_clearing_is_noticed_without_a_release() -> None:
    sat = Sat()
    flow = FlowController(FlowConfig(max_concurrency=8, saturation_recheck_s=0.005), saturated=sat)
    async with flow.admit(req("holder")):
        sat.on = True
        waiter = asyncio.create_task(flow.admit(req("w")).__aenter__())
        await settle()
        assert flow.num_queued == 1
        sat.on = False  # e.g. a metrics scrape; nobody pokes
        ticket = await asyncio.wait_for(waiter, 5)
        assert ticket.wait_s > 0
        flow.release(ticket)
    flow.close()
    assert flow.in_flight == 0
