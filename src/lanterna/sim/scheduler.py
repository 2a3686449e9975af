"""Scheduling policy: the waiting queue's order and who is preempted, as vLLM's ``--scheduling-policy``.

- ``fcfs``: waiting is a deque in arrival order; a preempted request goes back to its FRONT; the
  victim of a preemption is the LAST running request (the most recently admitted).
- ``priority``: waiting is a heap on ``(priority, arrival_time, admission order)``, lower first; a
  preempted request is pushed back by that key; the victim is the running request with the largest
  ``(priority, arrival_time)``, even one already scheduled earlier in the same step (the engine then
  takes back its tokens), exactly as vLLM's priority policy does.

Admission is head-of-line in both: if the head does not fit, nobody behind it is admitted this step.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from typing import Protocol

from lanterna.sim.engine_config import SchedulingPolicy
from lanterna.sim.request_state import SeqState


class WaitingQueue(Protocol):
    """Requests not running. ``peek``/``pop`` give the next to admit; ``iter`` walks that order."""

    def add(self, s: SeqState) -> None: ...
    def add_preempted(self, s: SeqState) -> None: ...
    def peek(self) -> SeqState: ...
    def pop(self) -> SeqState: ...
    def remove(self, s: SeqState) -> None: ...
    def __len__(self) -> int: ...
    def __bool__(self) -> bool: ...
    def __contains__(self, s: object) -> bool: ...
    def __iter__(self) -> Iterator[SeqState]: ...


class FcfsQueue(deque[SeqState]):
    """Arrival order; preempted requests jump to the front (they were admitted before anyone waiting)."""

    add = deque.append
    add_preempted = deque.appendleft
    pop = deque.popleft

    def __bool__(self) -> bool:
        return len(self) > 0

    def peek(self) -> SeqState:
        return self[0]


class PriorityQueue:
    """A heap on ``SeqState.sort_key``; ``remove`` (aborts) is O(n), which aborts can afford."""

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[tuple[int, float, int], SeqState]] = []

    def add(self, s: SeqState) -> None:
        heapq.heappush(self._heap, (s.sort_key, s))

    add_preempted = add

    def peek(self) -> SeqState:
        return self._heap[0][1]

    def pop(self) -> SeqState:
        return heapq.heappop(self._heap)[1]

    def remove(self, s: SeqState) -> None:
        self._heap = [e for e in self._heap if e[1] is not s]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __contains__(self, s: object) -> bool:
        return any(e[1] is s for e in self._heap)

    def __iter__(self) -> Iterator[SeqState]:
        return (e[1] for e in sorted(self._heap, key=lambda e: e[0]))


def make_waiting_queue(policy: SchedulingPolicy) -> WaitingQueue:
    if policy == "fcfs":
        return FcfsQueue()
    if policy == "priority":
        return PriorityQueue()
    raise ValueError(f"unknown scheduling policy {policy!r}; known: fcfs, priority")


def preemption_victim(policy: SchedulingPolicy, running: list[SeqState]) -> int:
    """Index in ``running`` of the request to preempt next."""
    if policy == "fcfs":
        return len(running) - 1
    best, key = 0, (running[0].req.priority, running[0].req.arrival_time)
    for j in range(1, len(running)):
        r = running[j].req
        k = (r.priority, r.arrival_time)
        if k > key:  # NOTE: strict, so ties keep the earliest in the running list, like Python's max()
            best, key = j, k
    return best
