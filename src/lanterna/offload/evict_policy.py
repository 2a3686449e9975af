"""Shared-storage eviction decisions: watermarks and a bounded set of the least-recently-read files.

Hysteresis between two watermarks (llm-d: 85% / 70%): nothing happens below ``high``; once usage reaches
it, the evictor frees down to ``low``, so it deletes in large batches instead of one file per write.
``OldestCandidates`` keeps only the ``k`` oldest files seen during a streaming scan (a max-heap on
recency), so a scan of millions of files holds ``k`` entries, not millions; when one round's ``k`` files
do not free enough, the next round rescans and finds the next oldest. Pure: no clocks, no I/O.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Watermarks:
    high: float = 0.85
    low: float = 0.70

    def __post_init__(self) -> None:
        if not 0.0 < self.low < self.high <= 1.0:
            raise ValueError(f"watermarks need 0 < low < high <= 1, got low={self.low} high={self.high}")

    def bytes_to_free(self, used_bytes: int, capacity_bytes: int) -> int:
        """0 below ``high``; otherwise what brings usage down to ``low`` (never negative)."""
        if capacity_bytes <= 0 or used_bytes < self.high * capacity_bytes:
            return 0
        return max(0, used_bytes - int(self.low * capacity_bytes))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A block file as the scan saw it; ``recency_ns`` is its atime (or mtime on noatime mounts)."""

    recency_ns: int
    size: int
    path: str


@dataclass(slots=True)
class OldestCandidates:
    """The ``k`` least-recent files offered so far, in O(k) memory and O(log k) per offer."""

    k: int
    _heap: list[tuple[int, int, Candidate]] = field(default_factory=list)  # (-recency, tiebreak, c)
    _seq: int = 0

    def offer(self, c: Candidate) -> None:
        self._seq += 1
        item = (-c.recency_ns, self._seq, c)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, item)
        elif -self._heap[0][0] > c.recency_ns:  # older than the newest kept: swap them
            heapq.heapreplace(self._heap, item)

    def __len__(self) -> int:
        return len(self._heap)

    def oldest_first(self) -> list[Candidate]:
        """Drain: oldest first; the set is empty afterwards."""
        out = [c for _, _, c in sorted(self._heap, key=lambda t: (-t[0], t[1]))]
        self._heap.clear()
        return out


def pick_victims(candidates: list[Candidate], need_bytes: int) -> list[Candidate]:
    """The shortest oldest-first prefix of ``candidates`` whose sizes reach ``need_bytes`` (all if short)."""
    out: list[Candidate] = []
    freed = 0
    for c in candidates:
        if freed >= need_bytes:
            break
        out.append(c)
        freed += c.size
    return out
