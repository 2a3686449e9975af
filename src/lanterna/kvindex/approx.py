"""Approximate prefix index: what the gateway routed where, by hashed text blocks (no tokenizer needed).

llm-d's ``prefix-cache-scorer`` model: cut the prompt's UTF-8 bytes into blocks of ``block_chars``
(= blockSizeTokens x 4, about 4 bytes per token), hash each with xxhash64 chained on the previous
block's hash and seeded by the model name (+ cache salt), and remember per endpoint, in an LRU of at
most ``capacity_per_endpoint`` hashes, the blocks of prompts routed there. A lookup counts, per endpoint,
consecutive matching blocks from the first block and stops at the first miss: a prefix cache can only
reuse a prefix.

Why an owner map beside the LRUs: scoring 64 endpoints x 256 blocks with per-endpoint lookups costs
~16k dict probes; walking hash -> owners once and shrinking the active set costs one probe per block.

Chat requests must be hashed over the whole conversation, not just the system prompt:
``chat_prefix_text`` renders messages one JSON object per line, so a conversation's text is a prefix of
its continuation's text and shared history maps to shared blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
import xxhash

_xxh64 = xxhash.xxh64_intdigest
_encode_sorted = msgspec.json.Encoder(order="sorted").encode  # same bytes as orjson's OPT_SORT_KEYS


def chat_prefix_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """Prefix-stable rendering of chat messages for the approximate index (one sorted-key JSON per line)."""
    return "".join(_encode_sorted(m).decode() + "\n" for m in messages)


class ApproxPrefixIndex:
    """Per-endpoint LRU sets of chained text-block hashes. Pure and single-threaded.

    Memory: ~250 bytes per held hash (the LRU node, the owner-map entry and the 64-bit key), so the default
    31,250 blocks per endpoint (llm-d's ``lruCapacityPerServer``: ~500k tokens, one H100's KV cache) is ~8 MB
    per endpoint when full. The owner map stores a bitmask of endpoint slots, not a set per hash: a set cost
    216 more bytes per hash (466 in all), the gateway's linear RSS growth in the 30-minute soak."""

    __slots__ = ("block_chars", "max_blocks", "capacity_per_endpoint", "_lru", "_owners", "_slots", "_eids",
                 "num_evictions")

    def __init__(self, block_chars: int = 64, max_blocks: int = 256, capacity_per_endpoint: int = 31250) -> None:
        if block_chars < 1 or max_blocks < 1 or capacity_per_endpoint < 1:
            raise ValueError("block_chars, max_blocks and capacity_per_endpoint must be >= 1")
        self.block_chars = block_chars
        self.max_blocks = max_blocks
        self.capacity_per_endpoint = capacity_per_endpoint
        self._lru: dict[str, OrderedDict[int, None]] = {}
        self._owners: dict[int, int] = {}  # hash -> bitmask of endpoint slots holding it
        self._slots: dict[str, int] = {}  # endpoint id -> its bit (1 << slot)
        self._eids: list[str | None] = []  # slot -> endpoint id (None: free, reused by the next endpoint)
        self.num_evictions = 0

    def hashes(self, model: str, text: str, cache_salt: str | None = None) -> list[int]:
        """Chained hashes of the first ``max_blocks`` full blocks (a trailing partial block is ignored)."""
        data = memoryview(text.encode())
        b = self.block_chars
        n = min(len(data) // b, self.max_blocks)
        h = _xxh64(f"{model}\x00{cache_salt or ''}".encode())
        out = [0] * n
        for i in range(n):
            h = _xxh64(data[i * b : (i + 1) * b], h)
            out[i] = h
        return out

    def match(self, hashes: Sequence[int], endpoint_ids: Iterable[str]) -> dict[str, int]:
        """Consecutive matched blocks from the first, per endpoint; endpoints with 0 are omitted."""
        out: dict[str, int] = {}
        if not hashes:
            return out
        owners = self._owners
        active = owners.get(hashes[0], 0)
        if not active:
            return out
        slots = self._slots
        wanted = 0
        for eid in endpoint_ids:
            wanted |= slots.get(eid, 0)
        active &= wanted
        for i in range(1, len(hashes)):
            if not active:
                return out
            nxt = active & owners.get(hashes[i], 0)
            if nxt != active:
                self._emit(active & ~nxt, i, out)
                active = nxt
        self._emit(active, len(hashes), out)
        return out

    def _emit(self, mask: int, n: int, out: dict[str, int]) -> None:
        eids = self._eids
        while mask:
            low = mask & -mask
            eid = eids[low.bit_length() - 1]
            if eid is not None:
                out[eid] = n
            mask ^= low

    def _slot(self, endpoint_id: str) -> int:
        bit = self._slots.get(endpoint_id)
        if bit is None:
            try:
                i = self._eids.index(None)
                self._eids[i] = endpoint_id
            except ValueError:
                i = len(self._eids)
                self._eids.append(endpoint_id)
            bit = self._slots[endpoint_id] = 1 << i
        return bit

    def insert(self, endpoint_id: str, hashes: Sequence[int]) -> None:
        """Record that ``hashes`` are (about to be) cached on ``endpoint_id``; evicts that endpoint's LRU."""
        lru = self._lru.get(endpoint_id)
        if lru is None:
            lru = self._lru[endpoint_id] = OrderedDict()
        bit = self._slot(endpoint_id)
        owners = self._owners
        for h in hashes:
            if h in lru:
                lru.move_to_end(h)
                continue
            lru[h] = None
            owners[h] = owners.get(h, 0) | bit
        cap = self.capacity_per_endpoint
        while len(lru) > cap:
            old, _ = lru.popitem(last=False)
            self._drop_owner(old, bit)
            self.num_evictions += 1

    def remove_endpoint(self, endpoint_id: str) -> None:
        """Forget an endpoint (it left the pool or restarted with an empty cache)."""
        lru = self._lru.pop(endpoint_id, None)
        bit = self._slots.pop(endpoint_id, 0)
        for h in lru or ():
            self._drop_owner(h, bit)
        if bit:
            self._eids[bit.bit_length() - 1] = None  # every hash lost this bit: the slot is free to reuse

    def _drop_owner(self, h: int, bit: int) -> None:
        m = self._owners.get(h)
        if m is not None:
            m &= ~bit
            if m:
                self._owners[h] = m
            else:
                del self._owners[h]

    def num_entries(self, endpoint_id: str | None = None) -> int:
        """Hashes held for one endpoint, or in total over all endpoints."""
        if endpoint_id is not None:
            lru = self._lru.get(endpoint_id)
            return len(lru) if lru is not None else 0
        return sum(len(v) for v in self._lru.values())

    @property
    def endpoint_ids(self) -> list[str]:
        return list(self._lru)
