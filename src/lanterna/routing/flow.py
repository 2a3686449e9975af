"""The async face of flow control: ``async with flow.admit(req) as ticket`` waits for a slot or raises.

The pure ``FlowCore`` decides; this adapter only parks waiters on futures and wakes the ones the core names.
The core hands a freed slot straight to the next waiter (state GRANTED) before that waiter resumes, so no wakeup
is lost and there is no thundering herd. Leaving the ``async with`` block (success, error or cancellation) frees
the slot; a waiter cancelled while queued (client disconnect) leaves the queue at once.

    flow = FlowController(FlowConfig(max_concurrency=256), saturated=pool.is_saturated)
    async with flow.admit(FlowRequest(rid, fairness_id=tenant, priority=prio, model=model)) as ticket:
        ...  # schedule + proxy; ticket.wait_s is the time spent queued

Errors: ``RateLimited`` (429, ``Retry-After``) for shed / full / saturated-with-nothing-in-flight, and
``QueueTimeout`` (503) for queue TTL; both carry ``x-llm-d-request-dropped-reason``. ``saturated`` must be cheap
(a cached flag): it is called on every admission.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from types import TracebackType

from lanterna.clock import Clock, MonotonicClock
from lanterna.errors import LanternaError, QueueTimeout, RateLimited
from lanterna.flowcontrol import (
    DropReason,
    EntryState,
    FlowConfig,
    FlowCore,
    FlowEntry,
    FlowRequest,
    FlowStats,
)

__all__ = ["DROPPED_REASON_HEADER", "Admission", "FlowConfig", "FlowController", "FlowRequest", "FlowStats", "Ticket"]

DROPPED_REASON_HEADER = "x-llm-d-request-dropped-reason"

Ticket = FlowEntry  # what ``admit`` yields: ``.request``, ``.wait_s``, ``.state``

_GRANTED, _QUEUED, _DROPPED = EntryState.GRANTED, EntryState.QUEUED, EntryState.DROPPED


class FlowController:
    """One per gateway process (and event loop). Not thread-safe: call it from the loop only."""

    def __init__(
        self,
        config: FlowConfig | None = None,
        saturated: Callable[[], bool] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config or FlowConfig()
        self._core = FlowCore(self.config, clock or MonotonicClock(), saturated)
        self._retry_after = str(max(1, math.ceil(self.config.retry_after_s)))
        self._recheck: asyncio.TimerHandle | None = None

    @property
    def core(self) -> FlowCore:
        return self._core

    @property
    def in_flight(self) -> int:
        return self._core.in_flight

    @property
    def num_queued(self) -> int:
        return self._core.num_queued

    def admit(self, request: FlowRequest) -> Admission:
        """An async context manager that yields a ``Ticket`` once the request may dispatch."""
        return Admission(self, request)

    def release(self, ticket: Ticket) -> None:
        """Free a ticket's slot early (idempotent; leaving the ``async with`` block does it anyway)."""
        granted = self._core.release(ticket)
        if granted or self._core.num_queued:
            self._settle(granted)

    def poke(self) -> None:
        """Saturation may have cleared (new metrics, new endpoint): dispatch what now fits."""
        self._settle(self._core.dispatch())

    def stats(self) -> FlowStats:
        return self._core.stats()

    def close(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None

    # -- waking ------------------------------------------------------------------------------------------------

    def _settle(self, changed: Sequence[FlowEntry]) -> None:
        """Wake granted waiters, fail dropped ones, and keep polling saturation if only it blocks the queue."""
        for entry in changed:
            waiter: tuple[asyncio.Future[None], asyncio.TimerHandle] = entry.waiter  # type: ignore[assignment]
            fut, timer = waiter
            timer.cancel()
            if fut.done():  # its task was cancelled meanwhile; its cleanup sees the entry's state
                continue
            if entry.state is _GRANTED:
                fut.set_result(None)
            else:
                fut.set_exception(self._error(entry))
        if self._recheck is None and self._core.blocked_by_saturation:
            loop = asyncio.get_running_loop()
            self._recheck = loop.call_later(self.config.saturation_recheck_s, self._on_recheck)

    def _on_recheck(self) -> None:
        self._recheck = None
        self.poke()

    def _on_ttl(self, entry: FlowEntry) -> None:
        if self._core.expire(entry):
            fut: asyncio.Future[None] = entry.waiter[0]  # type: ignore[index]
            if not fut.done():
                fut.set_exception(self._error(entry))

    def _error(self, entry: FlowEntry) -> LanternaError:
        reason = entry.drop_reason or DropReason.SATURATED
        rid = entry.request.request_id
        if reason is DropReason.TTL_EXPIRED:
            return QueueTimeout(
                f"request {rid} waited longer than its queue TTL",
                headers={DROPPED_REASON_HEADER: reason.header},
            )
        text = {
            DropReason.SHED: "sheddable request rejected: the pool is saturated",
            DropReason.SATURATED: "the pool is saturated",
            DropReason.QUEUE_FULL: "the request queue is full",
            DropReason.EVICTED: "sheddable request evicted from the queue by a higher-priority request",
        }.get(reason, "request dropped by flow control")
        return RateLimited(
            f"{text} (request {rid})",
            headers={DROPPED_REASON_HEADER: reason.header, "Retry-After": self._retry_after},
        )

    async def _wait(self, entry: FlowEntry) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        timer = loop.call_at(loop.time() + (entry.deadline - entry.enqueued_at), self._on_ttl, entry)
        entry.waiter = (fut, timer)
        try:
            await fut
        except asyncio.CancelledError:
            # The client left: leave the queue, or hand on a slot granted while we were being cancelled.
            self._settle(self._core.cancel(entry))
            raise
        finally:
            timer.cancel()


class Admission:
    """``async with`` support without a generator: the fast path costs one core call and no awaits."""

    __slots__ = ("_flow", "_request", "_entry")

    def __init__(self, flow: FlowController, request: FlowRequest) -> None:
        self._flow = flow
        self._request = request
        self._entry: FlowEntry | None = None

    async def __aenter__(self) -> Ticket:
        flow = self._flow
        entry, changed = flow._core.admit(self._request)
        self._entry = entry
        if changed:
            flow._settle(changed)
        state = entry.state
        if state is _GRANTED:
            return entry
        if state is _DROPPED:
            raise flow._error(entry)
        if flow._recheck is None and flow._core.blocked_by_saturation:
            flow._settle(())
        await flow._wait(entry)
        return entry

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        entry = self._entry
        if entry is not None and entry.state is _GRANTED:
            flow = self._flow
            granted = flow._core.release(entry)
            if granted or flow._core.num_queued:
                flow._settle(granted)
