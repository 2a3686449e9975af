"""BlockPool against vLLM's documented eviction order: exact block ids."""

from __future__ import annotations

import pytest

from lanterna.protocol.kv_events import BlockRemoved
from lanterna.sim.block_pool import BlockPool, OffloadTier


def test_fresh_pool_allocates_from_head_in_id_order() -> None:
    pool = BlockPool(6)
    assert pool.allocate(3) == [0, 1, 2]
    assert pool.free_queue() == [3, 4, 5]
    assert pool.num_free == 3
    assert pool.usage == pytest.approx(0.5)


def test_allocate_refuses_without_taking_anything() -> None:
    pool = BlockPool(4)
    pool.allocate(3)
    assert pool.allocate(2) is None
    assert pool.num_free == 1


def test_free_in_reverse_puts_sequence_tail_first_in_eviction_order() -> None:
    pool = BlockPool(6)
    blocks = pool.allocate(4)
    assert blocks is not None
    pool.free(reversed(blocks))
    assert pool.free_queue() == [4, 5, 3, 2, 1, 0]


def test_reallocating_a_cached_free_block_evicts_its_hash_with_one_event_per_block() -> None:
    pool = BlockPool(3)
    blocks = pool.allocate(3)
    assert blocks == [0, 1, 2]
    for b, h in zip(blocks, (100, 101, 102), strict=True):
        pool.cache_block(b, h)
    pool.free(reversed(blocks))  # queue: 2, 1, 0
    assert pool.allocate(2) == [2, 1]
    assert pool.events == [BlockRemoved([102]), BlockRemoved([101])]
    assert pool.lookup(102) is None and pool.lookup(101) is None
    assert pool.lookup(100) == 0  # still cached while free


def test_cache_hit_revives_a_free_block_and_bumps_ref_count() -> None:
    pool = BlockPool(4)
    a = pool.allocate(2)
    assert a == [0, 1]
    pool.cache_block(0, 7)
    pool.free(reversed(a))  # queue: 2, 3, 1, 0
    assert pool.free_queue() == [2, 3, 1, 0]
    hit = pool.lookup(7)
    assert hit == 0
    pool.touch([hit])
    assert pool.ref[0] == 1
    assert pool.free_queue() == [2, 3, 1]
    assert pool.allocate(3) == [2, 3, 1]
    assert pool.lookup(7) == 0  # the revived block was not evicted


def test_shared_prefix_ref_counts_free_only_when_last_holder_leaves() -> None:
    pool = BlockPool(8)
    a = pool.allocate(3)
    assert a == [0, 1, 2]
    pool.cache_block(0, 10)
    pool.cache_block(1, 11)
    pool.touch([0, 1])  # request B shares the two-block prefix
    b = [0, 1, *(pool.allocate(1) or [])]
    assert b == [0, 1, 3]
    assert pool.ref[:4] == [2, 2, 1, 1]
    pool.free(reversed(a))
    assert pool.free_queue() == [4, 5, 6, 7, 2]
    pool.free(reversed(b))
    assert pool.free_queue() == [4, 5, 6, 7, 2, 3, 1, 0]
    assert pool.num_free == 8


def test_duplicate_hash_keeps_first_holder_and_both_evict_separately() -> None:
    pool = BlockPool(2)
    pool.allocate(2)
    pool.cache_block(0, 5)
    pool.cache_block(1, 5)
    assert pool.lookup(5) == 0
    pool.free([0, 1])
    assert pool.allocate(1) == [0]
    assert pool.lookup(5) == 1
    assert pool.allocate(1) == [1]
    assert pool.lookup(5) is None
    assert pool.events == [BlockRemoved([5]), BlockRemoved([5])]


def test_on_evict_called_only_for_last_gpu_copy() -> None:
    evicted: list[int] = []
    pool = BlockPool(2, on_evict=evicted.append)
    pool.allocate(2)
    pool.cache_block(0, 5)
    pool.cache_block(1, 5)
    pool.free([0, 1])
    pool.allocate(1)
    assert evicted == []
    pool.allocate(1)
    assert evicted == [5]


def test_reset_refuses_while_blocks_in_use() -> None:
    pool = BlockPool(2)
    pool.allocate(1)
    pool.cache_block(0, 9)
    assert pool.reset() is False
    pool.free([0])
    assert pool.reset() is True
    assert pool.lookup(9) is None


def test_offload_tier_is_lru_with_capacity() -> None:
    tier = OffloadTier("CPU", 2)
    assert tier.insert(1) is None
    assert tier.insert(2) is None
    tier.hit(1)
    assert tier.insert(3) == 2
    assert 1 in tier and 3 in tier and 2 not in tier
    assert len(tier) == 2
