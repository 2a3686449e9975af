"""One priority band: round-robin across fairness ids, FCFS (or SLO-deadline) within each, O(1) push/pop/remove.

Why ordered dicts rather than deques: a client that disconnects (or whose TTL expires) must leave the queue at
once, from the middle, without an O(n) scan; ``OrderedDict`` gives O(1) delete by key and O(1) pop from the front.
The band-wide ``_all`` dict (arrival order) answers "newest entry" for eviction in O(1).

SLO-deadline ordering (llm-d's ``slo-deadline-ordering-policy``, ``edf=True``): inside a fairness id, entries
with an SLO deadline (arrival + ``x-slo-ttft-ms``) go first, earliest deadline first, ties by arrival; entries
without one follow in FCFS order. Deadline entries sit in a heap with lazy deletion (a removed entry stays in
the heap until it surfaces or the heap is compacted), so push/pop are O(log n) and remove stays O(1).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque

from lanterna.flowcontrol.types import FlowEntry


class _Flow:
    """One fairness id's queue: FCFS entries, plus an EDF heap of deadline entries when the band orders by SLO."""

    __slots__ = ("fifo", "heap", "live")

    def __init__(self) -> None:
        self.fifo: OrderedDict[int, FlowEntry] = OrderedDict()
        self.heap: list[tuple[float, int, FlowEntry]] = []
        self.live: set[int] = set()  # seqs of heap entries still queued

    def __len__(self) -> int:
        return len(self.fifo) + len(self.live)

    def push(self, entry: FlowEntry, edf: bool) -> None:
        dl = entry.request.slo_deadline
        if edf and dl is not None:
            heapq.heappush(self.heap, (dl, entry.seq, entry))
            self.live.add(entry.seq)
        else:
            self.fifo[entry.seq] = entry

    def pop(self) -> FlowEntry:
        heap, live = self.heap, self.live
        while heap:
            _, seq, entry = heapq.heappop(heap)
            if seq in live:
                live.discard(seq)
                return entry
        return self.fifo.popitem(last=False)[1]

    def remove(self, seq: int) -> None:
        if self.fifo.pop(seq, None) is None:
            self.live.discard(seq)
            if len(self.heap) > 2 * len(self.live) + 16:
                self.heap = [h for h in self.heap if h[1] in self.live]
                heapq.heapify(self.heap)


class PriorityBand:
    """Queued entries of one priority. ``pop`` serves fairness ids in turn (round-robin), oldest first in each."""

    __slots__ = ("priority", "edf", "_flows", "_rotation", "_in_rotation", "_all")

    def __init__(self, priority: int, edf: bool = False) -> None:
        self.priority = priority
        self.edf = edf
        self._flows: dict[str, _Flow] = {}
        # NOTE: a fairness id is in _rotation at most once (tracked by _in_rotation); a flow emptied by removal may
        # linger there until pop reaches it or _compact runs, keeping its turn if it refills meanwhile.
        self._rotation: deque[str] = deque()
        self._in_rotation: set[str] = set()
        self._all: OrderedDict[int, FlowEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._all)

    def flow_len(self, fairness_id: str) -> int:
        flow = self._flows.get(fairness_id)
        return len(flow) if flow is not None else 0

    def flows(self) -> dict[str, int]:
        """Queued entries per fairness id (for stats)."""
        return {fid: len(flow) for fid, flow in self._flows.items()}

    def push(self, entry: FlowEntry) -> None:
        fid = entry.request.fairness_id
        flow = self._flows.get(fid)
        if flow is None:
            flow = self._flows[fid] = _Flow()
            if fid not in self._in_rotation:
                self._in_rotation.add(fid)
                self._rotation.append(fid)
        flow.push(entry, self.edf)
        self._all[entry.seq] = entry

    def pop(self) -> FlowEntry | None:
        """The next entry of the fairness id whose turn it is (oldest, or earliest SLO deadline); that id then
        goes to the back."""
        rotation = self._rotation
        while rotation:
            fid = rotation.popleft()
            flow = self._flows.get(fid)
            if not flow:
                self._in_rotation.discard(fid)
                continue
            entry = flow.pop()
            del self._all[entry.seq]
            if flow:
                rotation.append(fid)
            else:
                del self._flows[fid]
                self._in_rotation.discard(fid)
            return entry
        return None

    def remove(self, entry: FlowEntry) -> bool:
        """Take ``entry`` out from anywhere in the band; False when it is not queued here."""
        if self._all.pop(entry.seq, None) is None:
            return False
        fid = entry.request.fairness_id
        flow = self._flows[fid]
        flow.remove(entry.seq)
        if not flow:
            del self._flows[fid]
            if len(self._rotation) > 2 * len(self._flows) + 16:
                self._compact()
        return True

    def newest(self) -> FlowEntry | None:
        return next(reversed(self._all.values()), None) if self._all else None

    def entries(self) -> list[FlowEntry]:
        """All queued entries in arrival order (for TTL sweeps in virtual time)."""
        return list(self._all.values())

    def _compact(self) -> None:
        """Drop fairness ids whose flow emptied by removal, so the rotation stays bounded by live flows."""
        live = [fid for fid in self._rotation if fid in self._flows]
        self._rotation = deque(live)
        self._in_rotation = set(live)
