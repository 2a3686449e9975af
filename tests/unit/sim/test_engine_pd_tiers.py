"""P/D roles (remote prefill pull, prefill-only) and the CPU / shared-storage offload tiers."""

from __future__ import annotations

import pytest

from lanterna.protocol.kv_events import BlockRemoved, BlockStored
from lanterna.sim.tiers import OffloadTier
from lanterna.sim.types import RemotePrefill

from .helpers import make_engine, req, run


def test_remote_prefill_skips_compute_pays_transfer_and_decodes() -> None:
    e = make_engine(num_gpu_blocks=512, kv_bytes_per_token=1000, kv_transfer_bandwidth_bps=1e6)
    e.add_request(req("d", 1000, max_tokens=3, remote_prefill=RemotePrefill("eng", [1, 2], "h", 1)))
    first = e.step(0.0)
    assert first.num_prefill_tokens == 0 and first.num_decode_tokens == 1
    assert [o.first_token for o in first.outputs] == [True]
    assert first.duration_s == pytest.approx(0.01 + 999 * 1000 / 1e6)
    stored = [h for ev in first.kv_events if isinstance(ev, BlockStored) for h in ev.block_hashes]
    assert len(stored) == 250  # the pulled prompt KV is cached like computed KV
    r = run(e)
    assert r.finish == {"d": "length"} and len(r.tokens["d"]) == 2


def test_remote_prefill_transfer_only_covers_uncached_tokens() -> None:
    e = make_engine(num_gpu_blocks=512, kv_bytes_per_token=1000, kv_transfer_bandwidth_bps=1e6)
    e.add_request(req("warm", 400, max_tokens=1))
    run(e)
    e.add_request(req("d", 1000, max_tokens=1, remote_prefill=RemotePrefill()))
    out = e.step(1.0)
    assert out.outputs[0].num_cached_tokens == 999  # 400 local hits + 599 pulled: only the last token computed
    assert out.duration_s == pytest.approx(0.01 + 599 * 1000 / 1e6)


def test_remote_decode_prefills_returns_one_token_and_leaves_blocks_cached() -> None:
    e = make_engine()
    e.add_request(req("p", 20, max_tokens=50, do_remote_decode=True))
    r = run(e)
    assert r.finish == {"p": "length"} and len(r.tokens["p"]) == 1
    assert e.stats().kv_cache_usage == 0.0
    e.add_request(req("again", 21, max_tokens=1))
    assert run(e).cached["again"] == 20


def _fill_and_evict(e_kw: dict[str, int]) -> tuple[list[object], object]:
    e = make_engine(num_gpu_blocks=5, **e_kw)
    e.add_request(req("a", list(range(0, 17)), max_tokens=1))  # 4 full blocks cached
    run(e)
    e.add_request(req("b", list(range(500, 517)), max_tokens=1))  # evicts all of a's blocks
    return run(e).events, e


def test_evicted_gpu_blocks_go_to_cpu_tier_with_tier_events() -> None:
    events, _ = _fill_and_evict({"num_cpu_blocks": 8})
    cpu_stored = [ev for ev in events if isinstance(ev, BlockStored) and ev.medium == "CPU"]
    gpu_removed = [ev for ev in events if isinstance(ev, BlockRemoved) and ev.medium == "GPU"]
    assert len(cpu_stored) == len(gpu_removed) == 4
    assert [ev.block_hashes for ev in cpu_stored] == [ev.block_hashes for ev in gpu_removed]
    assert all(ev.token_ids == [] and ev.parent_block_hash is None for ev in cpu_stored)


def test_cpu_tier_hit_loads_blocks_back_with_a_time_cost() -> None:
    _, e = _fill_and_evict({"num_cpu_blocks": 8, "kv_bytes_per_token": 1000})
    e.add_request(req("c", list(range(0, 17)), max_tokens=1))
    out = e.step(10.0)
    assert out.outputs[0].num_cached_tokens == 16
    assert out.duration_s == pytest.approx(0.01 + 16 * 1000 / 25e9)
    reloaded = [ev for ev in out.kv_events if isinstance(ev, BlockStored) and ev.medium == "GPU"]
    assert sum(len(ev.block_hashes) for ev in reloaded) == 4
    assert e.stats().num_tier_hit_tokens == 16
    assert e.stats().prefix_cache_hits == 0  # GPU-only counter, as vLLM's


def test_evicted_blocks_are_written_through_to_cpu_and_storage() -> None:
    events, e = _fill_and_evict({"num_cpu_blocks": 1, "num_storage_blocks": 2})
    media = [(type(ev).__name__, ev.medium) for ev in events if isinstance(ev, BlockStored | BlockRemoved)]
    assert media.count(("BlockStored", "CPU")) == media.count(("BlockStored", "SHARED_STORAGE")) == 4
    assert media.count(("BlockRemoved", "CPU")) == 3  # 4 written, capacity 1
    assert media.count(("BlockRemoved", "SHARED_STORAGE")) == 2  # 4 written, capacity 2
    e.add_request(req("c", list(range(0, 17)), max_tokens=1))
    out = e.step(10.0)
    # a's blocks were evicted tail first (3, 2, 1, 0): CPU keeps 0, storage keeps 1 and 0; 2 and 3 are gone
    assert out.outputs[0].num_cached_tokens == 8
    block_bytes = 4 * 131072
    assert out.duration_s == pytest.approx(0.01 + block_bytes / 25e9 + block_bytes / 2e9)
    assert e.stats().num_storage_hit_tokens == 4


def test_storage_only_tier_is_charged_storage_bandwidth() -> None:
    _, e = _fill_and_evict({"num_storage_blocks": 8, "kv_bytes_per_token": 1000})
    e.add_request(req("c", list(range(0, 17)), max_tokens=1))
    out = e.step(10.0)
    assert out.outputs[0].num_cached_tokens == 16
    assert out.duration_s == pytest.approx(0.01 + 16 * 1000 / 2e9)


def test_a_shared_storage_tier_serves_blocks_another_engine_wrote() -> None:
    shared = OffloadTier("SHARED_STORAGE", 64, shared=True)
    a = make_engine(num_gpu_blocks=5, kv_bytes_per_token=1000, storage=shared)
    a.add_request(req("a", list(range(0, 17)), max_tokens=1))
    run(a)
    a.add_request(req("evict", list(range(500, 517)), max_tokens=1))
    stored = [ev for ev in run(a).events if isinstance(ev, BlockStored) and ev.medium == "SHARED_STORAGE"]
    assert sum(len(ev.block_hashes) for ev in stored) == 4 and len(shared) == 4
    b = make_engine(num_gpu_blocks=5, kv_bytes_per_token=1000, storage=shared)
    b.add_request(req("b", list(range(0, 17)), max_tokens=1))
    r = run(b)
    assert r.cached["b"] == 16 and b.stats().num_storage_hit_tokens == 16
    assert r.steps[0].duration_s == pytest.approx(0.01 + 16 * 1000 / 2e9)
    gpu = [ev for ev in r.events if isinstance(ev, BlockStored) and ev.medium == "GPU"]
    assert gpu[0].block_hashes == [h for ev in stored for h in ev.block_hashes][::-1]  # same hashes, both engines
    assert b.reset_prefix_cache() and len(shared) == 4  # a replica's reset leaves shared storage alone


def test_tier_store_is_announced_before_the_gpu_removal() -> None:
    """An index resolves token-less tier events through the GPU mapping the removal would drop."""
    events, _ = _fill_and_evict({"num_cpu_blocks": 8})
    at = {(type(ev).__name__, ev.medium, ev.block_hashes[0]): i for i, ev in enumerate(events)
          if isinstance(ev, BlockStored | BlockRemoved)}
    evicted = [h for (kind, medium, h) in at if kind == "BlockRemoved" and medium == "GPU"]
    assert len(evicted) == 4
    assert all(at[("BlockStored", "CPU", h)] < at[("BlockRemoved", "GPU", h)] for h in evicted)
