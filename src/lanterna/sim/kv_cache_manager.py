"""KV blocks of the requests: prefix lookup, allocation, block hashing, tiers and the KV events they cause.

The engine decides *who* runs and how many tokens (``engine.py``); this module does the bookkeeping
(vLLM's ``KVCacheManager`` over its ``BlockPool``): which blocks a request holds, which of its full
blocks are registered in the prefix cache, the ``BlockStored`` events that announce them, and the
CPU / shared-storage tiers that catch evicted hashes. Events accumulate in ``pool.events``.
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
from lanterna.sim.block_pool import BlockPool, OffloadTier
from lanterna.sim.engine_config import EngineConfig
from lanterna.sim.request_state import SeqState


class KVCacheManager:
    """Blocks, hashes and tiers for one engine; counters feed ``EngineStats``."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.block_size = config.block_size
        self._hseed = seed_for(config.hash_seed)
        self.tiers = [
            OffloadTier(medium, cap)
            for medium, cap in ((MEDIUM_CPU, config.num_cpu_blocks), (MEDIUM_SHARED_STORAGE, config.num_storage_blocks))
            if cap > 0
        ]
        self.pool = BlockPool(config.num_gpu_blocks, self._offload if self.tiers else None)
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.num_tier_hit_tokens = 0

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
                tier = next((t for t, tr in enumerate(tiers) if h in tr), -1)
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
                self.tiers[-1 - b].hit(h)  # keep planned loads from being evicted by this allocation
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

    def _offload(self, block_hash: int) -> None:
        """A hash's last GPU copy was evicted: push it down the tiers (CPU, then storage)."""
        h: int | None = block_hash
        for tier in self.tiers:
            if h is None:
                return
            if h in tier:
                tier.hit(h)
                return
            self.pool.events.append(BlockStored([h], None, [], self.block_size, None, tier.medium))
            h = tier.insert(h)
            if h is not None:
                self.pool.events.append(BlockRemoved([h], tier.medium))

    def reset(self) -> bool:
        """Forget all cached blocks (all tiers); False while requests hold blocks, as vLLM."""
        if not self.pool.reset():
            return False
        for tier in self.tiers:
            tier.clear()
        self.pool.events.append(AllBlocksCleared())
        return True
