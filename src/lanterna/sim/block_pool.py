"""vLLM V1's KV block pool: fixed blocks, ref counts, an LRU free queue and a hash -> block map.

Eviction order is the point of this module, so it follows vLLM exactly:
- the free queue starts as ``0, 1, ..., N-1``; allocation pops from the head, freeing appends to the tail;
- a request frees its blocks in *reverse* (the caller passes them reversed), so the tail of a sequence,
  least likely to be shared, is evicted first;
- a freed block keeps its hash and stays findable until it is reallocated; reallocating it hands the hash to the
  lower tiers, if any, then evicts it (one ``BlockRemoved`` per block);
- a cache hit on a free block takes it out of the free queue (``touch``) and bumps its ref count.

Unlike vLLM there is no reserved null block (the simulator has no sliding-window layers), so all N
blocks are usable and block ids in tests start at 0.

The free queue is an intrusive doubly linked list over two int arrays (O(1) removal from the middle,
which a deque cannot do), with sentinel index N.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from lanterna.protocol.kv_events import MEDIUM_GPU, BlockRemoved, KVEvent
from lanterna.sim.tiers import OffloadTier

__all__ = ["BlockPool", "OffloadTier"]


class BlockPool:
    """GPU KV blocks. Events the pool causes (``BlockRemoved``) are appended to ``events``."""

    __slots__ = (
        "num_blocks",
        "ref",
        "hash_of",
        "cached",
        "events",
        "on_evict",
        "_prev",
        "_next",
        "_num_free",
    )

    def __init__(self, num_blocks: int, on_evict: Callable[[int], None] | None = None) -> None:
        if num_blocks <= 0:
            raise ValueError("num_blocks must be positive")
        n = num_blocks
        self.num_blocks = n
        self.ref = [0] * n
        self.hash_of: list[int | None] = [None] * n
        self.cached: dict[int, list[int]] = {}  # hash -> blocks holding it (first is the one hits use)
        self.events: list[KVEvent] = []
        self.on_evict = on_evict  # called with a hash when its last GPU copy is evicted
        # circular list with sentinel n: next[n] is the head, prev[n] the tail
        self._next = [*range(1, n + 1), 0]
        self._prev = [n, *range(0, n)]
        self._num_free = n

    # ---- queries -------------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        return self._num_free

    @property
    def usage(self) -> float:
        """Fraction of blocks held by requests (cached-but-free blocks count as free, as in vLLM)."""
        return 1.0 - self._num_free / self.num_blocks

    def lookup(self, block_hash: int) -> int | None:
        blocks = self.cached.get(block_hash)
        return blocks[0] if blocks else None

    def free_queue(self) -> list[int]:
        """Block ids in eviction order (head first); for tests and docs, O(N)."""
        out, n = [], self.num_blocks
        b = self._next[n]
        while b != n:
            out.append(b)
            b = self._next[b]
        return out

    # ---- mutations -----------------------------------------------------------------------------
    def _unlink(self, b: int) -> None:
        p, nx = self._prev[b], self._next[b]
        self._next[p] = nx
        self._prev[nx] = p
        self._num_free -= 1

    def touch(self, block_ids: Iterable[int]) -> None:
        """A cache hit: revive free blocks out of the free queue and take a reference."""
        ref = self.ref
        for b in block_ids:
            if ref[b] == 0:
                self._unlink(b)
            ref[b] += 1

    def allocate(self, num: int) -> list[int] | None:
        """``num`` fresh blocks from the head of the free queue, or None (nothing taken) if short."""
        if num > self._num_free:
            return None
        out: list[int] = []
        nxt, prv, n, ref, hash_of = self._next, self._prev, self.num_blocks, self.ref, self.hash_of
        b = nxt[n]
        for _ in range(num):
            h = hash_of[b]
            if h is not None:
                self._evict(b, h)
            ref[b] = 1
            out.append(b)
            b = nxt[b]
        # the taken blocks are a prefix of the queue: unlink them in one splice
        nxt[n] = b
        prv[b] = n
        self._num_free -= num
        return out

    def _evict(self, b: int, h: int) -> None:
        holders = self.cached[h]
        holders.remove(b)
        self.hash_of[b] = None
        # NOTE: the offload's tier events go out *before* the GPU removal, as in vLLM (whose connector
        # stores a block before the GPU can drop it): an index resolves token-less tier events through
        # the GPU event's mapping, which the removal would otherwise have dropped.
        if not holders:
            del self.cached[h]
            if self.on_evict is not None:
                self.on_evict(h)
        self.events.append(BlockRemoved([h], MEDIUM_GPU))

    def free(self, block_ids: Iterable[int]) -> None:
        """Drop one reference per block, in the given order; blocks reaching 0 join the tail."""
        ref, nxt, prv, n = self.ref, self._next, self._prev, self.num_blocks
        for b in block_ids:
            ref[b] -= 1
            if ref[b] == 0:
                tail = prv[n]
                nxt[tail] = b
                prv[b] = tail
                nxt[b] = n
                prv[n] = b
                self._num_free += 1

    def cache_block(self, b: int, block_hash: int) -> None:
        """Register a full block under its hash (a duplicate hash keeps the first holder for hits)."""
        self.hash_of[b] = block_hash
        holders = self.cached.get(block_hash)
        if holders is None:
            self.cached[block_hash] = [b]
        else:
            holders.append(b)

    def reset(self) -> bool:
        """Forget every hash; refuses (False) while any block is in use, as vLLM does."""
        if self._num_free != self.num_blocks:
            return False
        self.cached.clear()
        self.hash_of = [None] * self.num_blocks
        return True

