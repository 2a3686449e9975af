"""Flow-control values: the request as flow control sees it, its queue entry, and why a request was dropped.

Kept apart from the queues so the gateway adapter, the virtual-time cluster and tests share one vocabulary.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

DEFAULT_FAIRNESS_ID = "default"
ORDERINGS = ("fcfs", "slo-deadline")


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """Plain typed limits (the pydantic ``flowcontrol`` config section is mapped onto this by the app).

    Args:
        max_concurrency: requests dispatched and not yet finished; arrivals beyond it queue.
        max_queue_len: queued requests over all bands; beyond it the lowest sheddable entry is evicted or the
            arrival is rejected (429).
        queue_ttl_s: longest time a request may wait in the queue (503 ``rejected-ttl-expired``).
        max_queue_len_per_flow: optional cap per fairness id, so one tenant cannot fill the whole queue.
        retry_after_s: the ``Retry-After`` value sent with a 429.
        saturation_recheck_s: while dispatch is blocked only by saturation, the async adapter re-checks the
            ``saturated`` callable this often (saturation clears on a metrics scrape, not on a local event).
        ordering: inside a fairness id, ``fcfs`` (arrival order) or ``slo-deadline`` (earliest SLO deadline
            first, entries without an SLO after them in arrival order; llm-d's ``slo-deadline-ordering-policy``).
    """

    max_concurrency: int = 4096
    max_queue_len: int = 10_000
    queue_ttl_s: float = 30.0
    max_queue_len_per_flow: int | None = None
    retry_after_s: float = 1.0
    saturation_recheck_s: float = 0.05
    ordering: str = "fcfs"

    def __post_init__(self) -> None:
        if self.ordering not in ORDERINGS:
            raise ValueError(f"ordering must be one of {', '.join(ORDERINGS)}")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.max_queue_len < 0:
            raise ValueError("max_queue_len must be >= 0")
        if self.queue_ttl_s <= 0:
            raise ValueError("queue_ttl_s must be > 0")
        if self.max_queue_len_per_flow is not None and self.max_queue_len_per_flow < 1:
            raise ValueError("max_queue_len_per_flow must be >= 1 when set")
        if self.saturation_recheck_s <= 0:
            raise ValueError("saturation_recheck_s must be > 0")


@dataclass(frozen=True, slots=True)
class FlowRequest:
    """What flow control needs of a request. Negative ``priority`` marks it sheddable (llm-d objectives)."""

    request_id: str
    fairness_id: str = DEFAULT_FAIRNESS_ID
    priority: int = 0
    model: str = ""
    ttl_s: float | None = None  # per-request queue TTL override; None = FlowConfig.queue_ttl_s
    slo_deadline: float | None = None  # clock time its TTFT SLO runs out (arrival + x-slo-ttft-ms), if any

    @property
    def sheddable(self) -> bool:
        return self.priority < 0


class DropReason(enum.Enum):
    """Why a request never dispatched. ``header`` is the exact llm-d ``x-llm-d-request-dropped-reason`` value."""

    SHED = "shed"  # sheddable arrival while saturated
    SATURATED = "saturated"  # saturated with nothing in flight to wait for
    QUEUE_FULL = "queue_full"  # queue (or the tenant's share) full, nothing lower to evict
    EVICTED = "evicted"  # a sheddable entry displaced by a higher-priority arrival
    TTL_EXPIRED = "ttl_expired"
    CANCELLED = "cancelled"  # the client left while queued (not an error the client sees)

    @property
    def header(self) -> str:
        return "rejected-ttl-expired" if self is DropReason.TTL_EXPIRED else "rejected-saturated"


class EntryState(enum.Enum):
    QUEUED = 1
    GRANTED = 2  # holds a concurrency slot (handed over by the core; the waiter may not have resumed yet)
    DROPPED = 3
    RELEASED = 4


@dataclass(slots=True, eq=False)
class FlowEntry:
    """One request's place in flow control. ``waiter`` is opaque to the core (the adapter keeps its future there).

    NOTE: a GRANTED entry owns one unit of ``in_flight`` until ``FlowCore.release(entry)``; the core hands the slot
    over at grant time, so a release can never be lost between waking a waiter and the waiter resuming.
    """

    request: FlowRequest
    seq: int
    enqueued_at: float
    deadline: float
    state: EntryState = EntryState.QUEUED
    granted_at: float = 0.0
    drop_reason: DropReason | None = None
    waiter: object = None

    @property
    def wait_s(self) -> float:
        """Time spent queued (0 on the fast path)."""
        return max(0.0, self.granted_at - self.enqueued_at) if self.state is not EntryState.QUEUED else 0.0
