"""The tiered, bounded KV-block index: our block key -> which endpoints hold it, on which tier.

Layout (chosen for ingest speed and memory, see docs/design/kvindex.md):
- one dict per tier, ``key -> bitmask`` (bit i = endpoint slot i; for shared storage, bit i = storage
  slot i, expanded to every endpoint mounting it at scoring time). ``_gpu`` holds *every* key (mask 0
  when only offload tiers hold it) and its insertion order is the LRU order, touched only by events, so
  replicas fed the same events hold the same index regardless of the queries they served;
- per endpoint, ``vLLM hash -> key`` (the only way to resolve removals and token-less offload events).
Both are hard-bounded: keys by ``capacity`` (evicting the oldest 1/32 at a time, amortised O(1)),
each endpoint's hash map by ``map_capacity``. Pure: no clocks, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from lanterna.kvindex import ingest
from lanterna.kvindex.hashing import chain_keys, root_key
from lanterna.kvindex.match import TierWeights, match_blocks
from lanterna.protocol.kv_events import MEDIUM_CPU, MEDIUM_GPU

TIER_GPU, TIER_CPU, TIER_STORAGE = 0, 1, 2


def tier_of(medium: str | None) -> int:
    """GPU (or unset) -> 0, CPU -> 1, anything else (STORAGE, SHARED_STORAGE, OBJECT_STORE...) -> 2."""
    if medium is None or medium == MEDIUM_GPU:
        return TIER_GPU
    if medium == MEDIUM_CPU:
        return TIER_CPU
    return TIER_STORAGE


@dataclass(slots=True)
class _EndpointState:
    slot: int
    model: str
    storage: str
    bit: int  # 1 << slot, precomputed: every event uses it
    sbit: int  # 1 << storage slot
    hmap: dict[int, int] = field(default_factory=dict)  # folded vLLM hash -> our key


@dataclass(slots=True)
class IndexCounters:
    num_blocks_stored: int = 0
    num_blocks_removed: int = 0
    num_keys_evicted: int = 0
    num_map_evicted: int = 0
    num_unresolved_parent: int = 0
    num_unresolved_hash: int = 0
    num_block_size_mismatch: int = 0
    num_lookups: int = 0  # match() calls (llm-d: kv_cache_index_lookup_requests)
    lookup_hit_blocks: float = 0.0  # sum over lookups of the best endpoint's tier-weighted matched blocks


class KVIndex:
    """Implements the scheduler's ``KVIndexView`` (``match``, ``block_size_for``) plus event application."""

    def __init__(
        self,
        capacity: int = 4_000_000,
        weights: TierWeights | None = None,
        map_capacity: int | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.map_capacity = map_capacity or capacity
        self.weights = weights or TierWeights()
        self.counters = IndexCounters()
        self._gpu: dict[int, int] = {}
        self._cpu: dict[int, int] = {}
        self._sto: dict[int, int] = {}
        self._eps: dict[str, _EndpointState] = {}
        self._free_slots: list[int] = []
        self._next_slot = 0
        self._storage_slot: dict[str, int] = {}
        self._storage_mounts: dict[int, int] = {}  # storage bit -> endpoint mask
        self._block_size: dict[str, int] = {}
        self._roots: dict[tuple[str, str | None], int] = {}

    # -- endpoints ---------------------------------------------------------------------------------
    def add_endpoint(self, endpoint_id: str, model: str, storage: str | None = None) -> None:
        """Register an endpoint; ``storage`` names the shared storage it mounts (default: private)."""
        if endpoint_id in self._eps:
            return
        slot = self._free_slots.pop() if self._free_slots else self._next_slot
        if slot == self._next_slot:
            self._next_slot += 1
        st = storage or f"private:{endpoint_id}"
        sbit = self._storage_slot.setdefault(st, len(self._storage_slot))
        self._eps[endpoint_id] = _EndpointState(slot, model, st, 1 << slot, 1 << sbit)
        self._storage_mounts[1 << sbit] = self._storage_mounts.get(1 << sbit, 0) | (1 << slot)

    def remove_endpoint(self, endpoint_id: str) -> None:
        """Forget an endpoint: clear its local tiers and free its slot (shared storage stays)."""
        ep = self._eps.get(endpoint_id)
        if ep is None:
            return
        self.clear_endpoint(endpoint_id)
        sbit = 1 << self._storage_slot[ep.storage]
        self._storage_mounts[sbit] &= ~(1 << ep.slot)
        del self._eps[endpoint_id]
        self._free_slots.append(ep.slot)

    def clear_endpoint(self, endpoint_id: str) -> None:
        """Drop the endpoint's GPU and CPU entries (AllBlocksCleared, sequence gap, restart)."""
        ep = self._eps.get(endpoint_id)
        if ep is None:
            return
        clear = ~(1 << ep.slot)
        sbit = 1 << self._storage_slot[ep.storage]
        kept: dict[int, int] = {}
        for vh, key in ep.hmap.items():
            for tier in (self._gpu, self._cpu):
                m = tier.get(key)
                if m is not None:
                    tier[key] = m & clear
            if self._sto.get(key, 0) & sbit:
                kept[vh] = key
            else:
                self._drop_if_empty(key)
        ep.hmap = kept

    def endpoints(self) -> list[str]:
        return list(self._eps)

    def set_block_size(self, model: str, block_size: int) -> None:
        """Block size from ``vllm:cache_config_info``; events' own ``block_size`` wins when they arrive."""
        self._block_size.setdefault(model, block_size)

    def block_size_for(self, model: str) -> int | None:
        return self._block_size.get(model)

    def root(self, model: str, lora: str | None) -> int:
        r = self._roots.get((model, lora))
        if r is None:
            r = self._roots[(model, lora)] = root_key(model, lora)
        return r

    # -- events ------------------------------------------------------------------------------------
    def store(
        self,
        endpoint_id: str,
        block_hashes: Sequence[int],
        parent_hash: int | None,
        token_ids: Sequence[int],
        block_size: int,
        medium: str | None = MEDIUM_GPU,
        lora: str | None = None,
    ) -> None:
        """Apply a BlockStored (hashes already folded to int). Token-less events resolve via the map."""
        ep = self._eps[endpoint_id]
        tier = TIER_GPU if medium is None or medium == MEDIUM_GPU else tier_of(medium)
        hmap = ep.hmap
        if token_ids:
            n = len(block_hashes)
            bs = self._block_size.get(ep.model)
            if bs is None:
                bs = self._block_size[ep.model] = block_size
            if bs != block_size or len(token_ids) != n * block_size:
                self.counters.num_block_size_mismatch += 1
                return
            if parent_hash is None:
                parent = self._roots.get((ep.model, lora)) or self.root(ep.model, lora)
            else:
                p = hmap.get(parent_hash)
                if p is None:
                    self.counters.num_unresolved_parent += 1
                    return
                parent = p
            keys = chain_keys(token_ids, block_size, parent, n)
        else:
            keys = []
            for vh in block_hashes:
                k = hmap.get(vh)
                if k is None and tier == TIER_STORAGE:
                    k = self._mount_peer_key(ep, vh)
                if k is None:
                    self.counters.num_unresolved_hash += 1
                    return
                keys.append(k)
        bit = ep.sbit if tier == TIER_STORAGE else ep.bit
        gpu = self._gpu
        gpop = gpu.pop
        if tier == TIER_GPU:
            for vh, key in zip(block_hashes, keys, strict=True):
                hmap[vh] = key
                gpu[key] = gpop(key, 0) | bit  # re-inserting moves the key to the young end (LRU)
        else:
            side = self._cpu if tier == TIER_CPU else self._sto
            for vh, key in zip(block_hashes, keys, strict=True):
                hmap[vh] = key
                gpu[key] = gpop(key, 0)
                side[key] = side.get(key, 0) | bit
        self.counters.num_blocks_stored += len(keys)
        if len(gpu) > self.capacity:
            self._evict_keys()
        if len(hmap) > self.map_capacity:
            self._evict_map(ep)

    def apply_batch(
        self, endpoint_id: str, events: Sequence[Any], counts: Counter[str], on_bad: Callable[[], object]
    ) -> None:
        """Apply one payload's decoded ``KVEvent``s in order (``ingest.apply_batch``: the general hot path).

        ``on_bad`` is called for an event with bad fields (dropped); bounds are enforced once per batch."""
        ingest.apply_batch(self, endpoint_id, events, counts, on_bad)

    def apply_hot(
        self, endpoint_id: str, events: Sequence[Any], counts: Counter[str], on_bad: Callable[[], object]
    ) -> None:
        """Apply the events of an ``ingest.decode_hot`` payload: the fastest path (see ``ingest``)."""
        ingest.apply_hot(self, endpoint_id, events, counts, on_bad)

    def remove(self, endpoint_id: str, block_hashes: Iterable[int], medium: str | None = MEDIUM_GPU) -> None:
        """Apply a BlockRemoved for one tier; the map entry goes once no tier of this endpoint holds it."""
        ep = self._eps[endpoint_id]
        tier = tier_of(medium)
        bit, sbit = ep.bit, ep.sbit
        hmap = ep.hmap
        for vh in block_hashes:
            key = hmap.get(vh)
            if key is None and tier == TIER_STORAGE:
                key = self._mount_peer_key(ep, vh)
            if key is None:
                self.counters.num_unresolved_hash += 1
                continue
            d = self._gpu if tier == TIER_GPU else (self._cpu if tier == TIER_CPU else self._sto)
            m = d.get(key)
            if m is not None:
                d[key] = m & ~(sbit if tier == TIER_STORAGE else bit)
            if not (
                self._gpu.get(key, 0) & bit or self._cpu.get(key, 0) & bit or self._sto.get(key, 0) & sbit
            ):
                hmap.pop(vh, None)
            self._drop_if_empty(key)
            self.counters.num_blocks_removed += 1

    def _mount_peer_key(self, ep: _EndpointState, vh: int) -> int | None:
        """Resolve a storage event through another endpoint on the same mount.

        Shared storage is one LRU for all its writers: replica B may evict (or rewrite) a file only
        replica A ever held on GPU, so B's own map cannot resolve the hash. Needs equal vLLM hashes
        across the mount, which sharing files needs anyway (same ``PYTHONHASHSEED``). O(endpoints),
        and only on this rare path."""
        for other in self._eps.values():
            if other.sbit == ep.sbit and other is not ep:
                k = other.hmap.get(vh)
                if k is not None:
                    return k
        return None

    def _drop_if_empty(self, key: int) -> None:
        if not (self._gpu.get(key, 0) or self._cpu.get(key, 0) or self._sto.get(key, 0)):
            self._gpu.pop(key, None)
            self._cpu.pop(key, None)
            self._sto.pop(key, None)

    def _evict_keys(self) -> None:
        n = len(self._gpu) - self.capacity + max(1, self.capacity // 32)
        n = min(n, len(self._gpu))
        for key in list(islice(self._gpu, n)):
            del self._gpu[key]
            self._cpu.pop(key, None)
            self._sto.pop(key, None)
        self.counters.num_keys_evicted += n

    def _evict_map(self, ep: _EndpointState) -> None:
        """Oldest hash mappings go; their keys lose this endpoint, keeping map and index consistent."""
        n = len(ep.hmap) - self.map_capacity + max(1, self.map_capacity // 32)
        clear = ~(1 << ep.slot)
        for vh in list(islice(ep.hmap, n)):
            key = ep.hmap.pop(vh)
            for tier in (self._gpu, self._cpu):
                m = tier.get(key)
                if m is not None:
                    tier[key] = m & clear
            self._drop_if_empty(key)
        self.counters.num_map_evicted += n

    # -- queries -----------------------------------------------------------------------------------
    def match(
        self, model: str, lora: str | None, token_ids: Sequence[int], endpoint_ids: Iterable[str]
    ) -> dict[str, float]:
        """Tier-weighted consecutive matched blocks from the first block, per requested endpoint."""
        ids = list(endpoint_ids)
        self.counters.num_lookups += 1
        bs = self._block_size.get(model)
        slots = {e: self._eps[e].slot for e in ids if e in self._eps}
        if bs is None or not slots:
            return dict.fromkeys(ids, 0.0)
        cand = 0
        for s in slots.values():
            cand |= 1 << s
        by_slot = match_blocks(
            token_ids, bs, self.root(model, lora), cand, self._gpu, self._cpu, self._sto,
            self._storage_mounts, self.weights,
        )
        if by_slot:
            self.counters.lookup_hit_blocks += max(by_slot.values())
        return {e: by_slot.get(slots[e], 0.0) if e in slots else 0.0 for e in ids}

    def holds(self, endpoint_id: str, key: int, tier: int = TIER_GPU) -> bool:
        ep = self._eps.get(endpoint_id)
        if ep is None:
            return False
        if tier == TIER_STORAGE:
            return bool(self._sto.get(key, 0) & (1 << self._storage_slot[ep.storage]))
        return bool((self._gpu if tier == TIER_GPU else self._cpu).get(key, 0) & (1 << ep.slot))

    def num_blocks(self, endpoint_id: str) -> int:
        """Blocks this endpoint holds in any tier (size of its hash map)."""
        ep = self._eps.get(endpoint_id)
        return len(ep.hmap) if ep else 0

    def __len__(self) -> int:
        return len(self._gpu)
