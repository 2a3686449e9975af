"""KV blocks of the requests: prefix lookup, allocation, block hashing, tiers and the KV events they cause.

The engine decides *who* runs and how many tokens (``engine.py``); this module does the bookkeeping
(vLLM's ``KVCacheManager`` over its ``BlockPool``): which blocks a request holds, which of its full
blocks are registered in the prefix cache, the ``BlockStored`` events that announce them, and the
CPU / shared-storage tiers that catch evicted hashes (``tiers.py``). Events accumulate in ``pool.events``.
"""

from __future__ import annotations

from lanterna.protocol.kv_events import (
    MEDIUM_CPU,
    MEDIUM_GPU,
    MEDIUM_SHARED_STORAGE,
    AllBlocksCleared,
    BlockHash,
    BlockRemoved,
    BlockStored,
)
from lanterna.sim.block_hash import block_extra_keys, hash_blocks, seed_for
from lanterna.sim.block_pool import BlockPool
from lanterna.sim.engine_config import EngineConfig
from lanterna.sim.request_state import SeqState
from lanterna.sim.tiers import KVTier, OffloadTier

TIER_CPU, TIER_STORAGE = 0, 1  # positions in ``loaded`` (the engine charges each its own bandwidth)


class KVCacheManager:
    """Blocks, hashes and tiers for one engine; counters feed ``EngineStats``.

    ``storage`` is a storage tier other engines may share (the virtual cluster's one ``OffloadTier``,
    or a ``DirectoryTier`` over a shared directory); without it ``num_storage_blocks`` makes a private one."""

    def __init__(self, config: EngineConfig, storage: KVTier | None = None) -> None:
        self.config = config
        self.block_size = config.block_size
        self._hseed = seed_for(config.hash_seed)
        if storage is None and config.num_storage_blocks > 0:
            storage = OffloadTier(MEDIUM_SHARED_STORAGE, config.num_storage_blocks)
        cpu = OffloadTier(MEDIUM_CPU, config.num_cpu_blocks) if config.num_cpu_blocks > 0 else None
        # (position in ``loaded``, tier) for the tiers present, fastest first
        self.tiers: list[tuple[int, KVTier]] = [(i, t) for i, t in ((TIER_CPU, cpu), (TIER_STORAGE, storage))
                                                if t is not None]
        self.pool = BlockPool(config.num_gpu_blocks, self._offload if self.tiers else None)
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.num_tier_hit_tokens = 0
        self.num_storage_hit_tokens = 0

    # ---- allocation ----------------------------------------------------------------------------
    def grow(self, s: SeqState, num_tokens: int) -> bool:
        """Give ``s`` enough blocks for ``num_tokens`` KV slots; False (nothing taken) if the pool is short."""
        need = -(-num_tokens // self.block_size) - len(s.blocks)
        if need <= 0:
            return True
        new = self.pool.allocate(need)
        if new is None:
            return False
        s.blocks.extend(new)
        s.num_slots = len(s.blocks) * self.block_size
        return True

    def free(self, s: SeqState) -> None:
        # NOTE: reversed, so the sequence's tail is evicted before its (more shareable) head.
        self.pool.free(reversed(s.blocks))
        s.blocks = []
        s.num_slots = 0

    def lookup(self, s: SeqState) -> list[tuple[int, int]]:
        """Longest cached prefix of ``s`` as (GPU block id, or -1-tier for a tier hit; hash) pairs."""
        if not self.config.enable_prefix_caching:
            return []
        bs, cached, tiers = self.block_size, self.pool.cached, self.tiers
        num_tokens = len(s.tokens)
        self.extend_hashes(s, num_tokens // bs)
        hits: list[tuple[int, int]] = []
        # NOTE: the last token is always recomputed. A blocked waiting head repeats this every step,
        # so the pool's map is read directly (BlockPool.lookup inlined).
        for h in s.hashes[: (num_tokens - 1) // bs]:
            holders = cached.get(h)
            if holders:
                b = holders[0]
            else:
                tier = next((i for i, tr in tiers if h in tr), -1)
                if tier < 0:
                    break
                b = -1 - tier
            hits.append((b, h))
        return hits

    def allocate_with_hits(self, s: SeqState, hits: list[tuple[int, int]], num_tokens: int,
                           loaded: list[int]) -> bool:
        """Blocks for the first ``num_tokens`` of ``s``: GPU hits shared, tier hits loaded, the rest new.

        False (nothing taken) if the pool cannot supply them. ``loaded[tier]`` counts blocks loaded back."""
        pool, bs = self.pool, self.block_size
        gpu_hits = [b for b, _ in hits if b >= 0]
        num_new = -(-num_tokens // bs) - len(gpu_hits)
        reviving = sum(1 for b in gpu_hits if pool.ref[b] == 0)
        if num_new > pool.num_free - reviving:
            return False
        for b, h in hits:
            if b < 0:
                self._tier_at(-1 - b).hit(h)  # keep planned loads from being evicted by this allocation
        pool.touch(gpu_hits)
        new = pool.allocate(num_new)
        assert new is not None  # NOTE: checked above; touch() only consumed the revived blocks
        new.reverse()  # pop() from the end takes them in allocation order
        blocks: list[int] = []
        run_start = -1
        for j, (b, h) in enumerate(hits):
            if b >= 0:
                blocks.append(b)
                if run_start >= 0:
                    self.store_event(s, run_start, j)
                    run_start = -1
                continue
            nb = new.pop()
            blocks.append(nb)
            pool.cache_block(nb, h)
            loaded[-1 - b] += 1
            self.num_tier_hit_tokens += bs
            if b == -1 - TIER_STORAGE:
                self.num_storage_hit_tokens += bs
            if run_start < 0:
                run_start = j
        if run_start >= 0:
            self.store_event(s, run_start, len(hits))
        new.reverse()
        blocks.extend(new)
        s.blocks = blocks
        s.num_slots = len(blocks) * bs
        s.num_cached_blocks = len(hits)
        return True

    # ---- the prefix cache ----------------------------------------------------------------------
    def extend_hashes(self, s: SeqState, num_full: int) -> None:
        have = len(s.hashes)
        if num_full > have:
            parent = s.hashes[-1] if have else None
            s.hashes += hash_blocks(s.tokens, self.block_size, have, num_full, parent, self._hseed,
                                    s.req.lora_name, s.req.cache_salt)

    def cache_full_blocks(self, s: SeqState) -> None:
        """Register blocks that became full this step and announce them in one ``BlockStored``."""
        full = s.num_computed // self.block_size
        start = s.num_cached_blocks
        if full <= start:
            return
        self.extend_hashes(s, full)
        cache_block, blocks, hashes = self.pool.cache_block, s.blocks, s.hashes
        for j in range(start, full):
            cache_block(blocks[j], hashes[j])
        s.num_cached_blocks = full
        self.store_event(s, start, full)

    def store_event(self, s: SeqState, start: int, end: int) -> None:
        bs, req = self.block_size, s.req
        if req.lora_name:
            extra: list[list[str] | None] = [[req.lora_name] for _ in range(start, end)]
        else:
            extra = [None] * (end - start)
        if start == 0 and req.cache_salt:
            extra[0] = list(block_extra_keys(0, req.lora_name, req.cache_salt))
        hashes: list[BlockHash] = list(s.hashes[start:end])
        self.pool.events.append(BlockStored(hashes, s.hashes[start - 1] if start else None,
                                            s.tokens[start * bs : end * bs], bs, s.lora_id, MEDIUM_GPU,
                                            req.lora_name, extra))

    def _tier_at(self, position: int) -> KVTier:
        return next(t for i, t in self.tiers if i == position)

    def _offload(self, h: int) -> None:
        """A hash's last GPU copy was evicted: write it through to every tier (CPU and storage).

        A tier that already holds it (storage another replica wrote) only refreshes its LRU position;
        no event, as the block is already announced for that medium."""
        events, bs = self.pool.events, self.block_size
        for _, tier in self.tiers:
            if h in tier:
                tier.hit(h)
                continue
            events.append(BlockStored([h], None, [], bs, None, tier.medium))
            gone = tier.insert(h)
            if gone is not None:
                events.append(BlockRemoved([gone], tier.medium))

    def reset(self) -> bool:
        """Forget all cached blocks (private tiers too); False while requests hold blocks, as vLLM.

        A shared storage tier survives: other replicas still read it (and the index keeps it too)."""
        if not self.pool.reset():
            return False
        for _, tier in self.tiers:
            if not tier.shared:
                tier.clear()
        self.pool.events.append(AllBlocksCleared())
        return True
