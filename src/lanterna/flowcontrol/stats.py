"""A point-in-time view of flow control that the gateway turns into Prometheus metrics (no prometheus here)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FlowStats:
    """Gauges (``in_flight``, ``num_queued``, per band and per flow) and monotonic counters since start.

    ``dropped`` is keyed by ``DropReason.value`` (shed, saturated, queue_full, evicted, ttl_expired, cancelled);
    map each to the llm-d dropped-reason header with ``DropReason(k).header`` if a label needs it.
    ``queued_by_flow`` is keyed by (fairness id, priority), the llm-d flow key; its size is bounded by the queue.
    """

    in_flight: int
    num_queued: int
    queued_by_priority: dict[int, int] = field(default_factory=dict)
    queued_by_flow: dict[tuple[str, int], int] = field(default_factory=dict)
    admitted_total: int = 0  # every admit() call
    dispatched_total: int = 0  # granted a slot (fast path or from the queue)
    enqueued_total: int = 0  # had to wait
    dropped: dict[str, int] = field(default_factory=dict)
    queue_wait_s_sum: float = 0.0  # over requests dispatched from the queue (enqueued_total - drops - queued)
