"""Lower KV tiers below the GPU: a replica's CPU tier and a shared-storage tier several replicas read.

A tier is a set of block hashes with a capacity and an LRU order. The engine only needs the
``KVTier`` protocol, so the same engine code runs over:

- ``OffloadTier``: in memory. One per replica for CPU; for shared storage, the virtual cluster hands
  *one* instance to every engine, so a block one replica offloaded is a hit for all of them;
- ``sim.shared_dir.DirectoryTier`` (an adapter): a directory of marker files that several
  ``lanterna sim`` processes share, as vLLM's filesystem tier shares ``root_dir``.

Write-through: a block leaving the GPU is written to every tier (vLLM's tiering spec stores to CPU
and its secondary tiers), so shared storage holds what any replica's CPU has since dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol


class KVTier(Protocol):
    """Calling protocol: ``h in tier`` on lookup; ``hit(h)`` when a block is loaded back (refreshes
    its LRU position); ``insert(h)`` on offload, returning the hash it evicted (the caller announces
    both as KV events with ``medium``); ``clear()`` on a prefix-cache reset of a private tier."""

    medium: str
    capacity: int
    shared: bool  # several replicas read it: a reset of one replica must not clear it

    def __contains__(self, block_hash: int) -> bool: ...
    def __len__(self) -> int: ...
    def hit(self, block_hash: int) -> None: ...
    def insert(self, block_hash: int) -> int | None: ...
    def clear(self) -> None: ...


class OffloadTier:
    """An in-memory LRU set of block hashes with a capacity (in GPU-sized blocks)."""

    __slots__ = ("medium", "capacity", "shared", "_lru")

    def __init__(self, medium: str, capacity: int, *, shared: bool = False) -> None:
        self.medium = medium
        self.capacity = capacity
        self.shared = shared
        self._lru: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, block_hash: int) -> bool:
        return block_hash in self._lru

    def __len__(self) -> int:
        return len(self._lru)

    def hit(self, block_hash: int) -> None:
        if block_hash in self._lru:
            self._lru.move_to_end(block_hash)

    def insert(self, block_hash: int) -> int | None:
        if block_hash in self._lru:
            self._lru.move_to_end(block_hash)
            return None
        self._lru[block_hash] = None
        if len(self._lru) > self.capacity:
            return self._lru.popitem(last=False)[0]
        return None

    def clear(self) -> None:
        self._lru.clear()
