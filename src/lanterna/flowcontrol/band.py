"""One priority band: round-robin across fairness ids, FCFS within each, O(1) push/pop/remove.

Why ordered dicts rather than deques: a client that disconnects (or whose TTL expires) must leave the queue at
once, from the middle, without an O(n) scan; ``OrderedDict`` gives O(1) delete by key and O(1) pop from the front.
The band-wide ``_all`` dict (arrival order) answers "newest entry" for eviction in O(1).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from lanterna.flowcontrol.types import FlowEntry


class PriorityBand:
    """Queued entries of one priority. ``pop`` serves fairness ids in turn (round-robin), oldest first in each."""

    __slots__ = ("priority", "_flows", "_rotation", "_in_rotation", "_all")

    def __init__(self, priority: int) -> None:
        self.priority = priority
        self._flows: dict[str, OrderedDict[int, FlowEntry]] = {}
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
            flow = self._flows[fid] = OrderedDict()
            if fid not in self._in_rotation:
                self._in_rotation.add(fid)
                self._rotation.append(fid)
        flow[entry.seq] = entry
        self._all[entry.seq] = entry

    def pop(self) -> FlowEntry | None:
        """The next entry: the oldest of the fairness id whose turn it is; that id then goes to the back."""
        rotation = self._rotation
        while rotation:
            fid = rotation.popleft()
            flow = self._flows.get(fid)
            if not flow:
                self._in_rotation.discard(fid)
                continue
            _, entry = flow.popitem(last=False)
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
        del flow[entry.seq]
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
