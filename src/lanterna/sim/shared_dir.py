"""A shared-storage KV tier over a directory that several ``lanterna sim`` processes mount.

vLLM's filesystem tier (``TieringOffloadingSpec`` ``secondary_tiers: [{"type": "fs", "root_dir": ...}]``)
writes one file per offloaded block, named by its block hash, to a temp name then renamed; the
directory *is* the index, so a block one pod wrote is a hit for every pod with the same model,
parallelism, block size and ``PYTHONHASHSEED``. The simulator keeps the layout and the atomicity but
writes a few-byte marker instead of the KV bytes (load time comes from the storage bandwidth):

    <root_dir>/<namespace>/<first 2 hex digits>/<16 hex digits of the hash>

Capacity: vLLM leaves the directory unbounded (an external evictor trims it). The sim bounds what
*this* process wrote or read with an LRU; evicting its oldest entry deletes the file unless another
process read or rewrote it since (its mtime moved past ours: a second chance), so the shared
directory approximates one LRU over all readers. Reads refresh the mtime, which is also what a
least-recently-read evictor looks at. Every call is a stat or a tiny write on a local path; the sim
makes them from its engine step, as vLLM's connector issues its I/O from the step too.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from pathlib import Path

from lanterna.protocol.kv_events import MEDIUM_SHARED_STORAGE

MARKER = b"lanterna-sim kv block\n"
SECOND_CHANCES = 8  # entries re-queued at most per eviction before the oldest is deleted anyway


def namespace_for(model: str, block_size: int, tp: int = 1) -> str:
    """Directory per (model, parallelism, block size): files are only shareable within one."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    return f"{safe}_tp{tp}_bs{block_size}"


class DirectoryTier:
    """``KVTier`` over a directory shared by processes (see module docstring)."""

    __slots__ = ("medium", "capacity", "shared", "base", "_lru", "_dirs", "_pid")

    def __init__(self, root: str | Path, namespace: str, capacity: int, medium: str = MEDIUM_SHARED_STORAGE) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.medium = medium
        self.capacity = capacity
        self.shared = True
        self.base = Path(root) / namespace
        self._lru: OrderedDict[int, int] = OrderedDict()  # hash -> mtime_ns we last gave its file
        self._dirs: set[str] = set()
        self._pid = os.getpid()

    def path(self, block_hash: int) -> str:
        name = f"{block_hash:016x}"
        return f"{self.base}/{name[:2]}/{name}"

    def __contains__(self, block_hash: int) -> bool:
        return os.path.exists(self.path(block_hash))

    def __len__(self) -> int:
        return len(self._lru)

    def hit(self, block_hash: int) -> None:
        """A load: refresh the file's mtime (least recently *read* goes first) and our LRU."""
        t = time.time_ns()
        try:
            os.utime(self.path(block_hash), ns=(t, t))
        except FileNotFoundError:  # evicted by another process since the lookup: nothing to refresh
            self._lru.pop(block_hash, None)
            return
        self._lru[block_hash] = t
        self._lru.move_to_end(block_hash)

    def insert(self, block_hash: int) -> int | None:
        """Write the block's file atomically (temp + rename); returns a hash whose file we deleted."""
        path = self.path(block_hash)
        d = path[: path.rfind("/")]
        if d not in self._dirs:
            os.makedirs(d, exist_ok=True)
            self._dirs.add(d)
        tmp = f"{path}.{self._pid}.tmp"
        with open(tmp, "wb") as f:
            f.write(MARKER)
        t = time.time_ns()
        os.utime(tmp, ns=(t, t))
        os.replace(tmp, path)  # NOTE: readers see the whole file or none
        self._lru[block_hash] = t
        self._lru.move_to_end(block_hash)
        if len(self._lru) > self.capacity:
            return self._evict()
        return None

    def _evict(self) -> int | None:
        lru = self._lru
        for _ in range(SECOND_CHANCES):
            h, ours = next(iter(lru.items()))
            try:
                mtime = os.stat(self.path(h)).st_mtime_ns
            except FileNotFoundError:
                del lru[h]  # someone else deleted it (and announced it): not ours to report
                return None
            if mtime <= ours:
                break
            lru[h] = mtime  # read or rewritten by another process since: keep it, as one LRU would
            lru.move_to_end(h)
        h, _ = lru.popitem(last=False)
        try:
            os.unlink(self.path(h))
        except FileNotFoundError:
            return None
        return h

    def clear(self) -> None:
        """Forget our bookkeeping; the files stay (other replicas read them)."""
        self._lru.clear()
