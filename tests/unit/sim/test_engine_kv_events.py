"""KV events in vLLM 0.32's shape: BlockStored per new run of full blocks, BlockRemoved, AllBlocksCleared."""

from __future__ import annotations

import json

from lanterna.protocol.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVEventBatch,
    decode_payload,
    encode_payload,
)
from tests.conftest import REFERENCE

from .helpers import make_engine, req, run


def _stored(events: list[object]) -> list[BlockStored]:
    return [e for e in events if isinstance(e, BlockStored)]


def test_every_full_block_is_stored_once_with_parents_chained_across_events() -> None:
    e = make_engine(max_num_batched_tokens=8)
    prompt = list(range(3000, 3022))  # 22 tokens: chunks of 8, 8, 6
    e.add_request(req("a", prompt, max_tokens=11))
    r = run(e)
    stored = _stored(r.events)
    assert len(stored) >= 3  # one per step in which blocks filled
    hashes = [h for ev in stored for h in ev.block_hashes]
    tokens = [t for ev in stored for t in ev.token_ids]
    # prompt (22) + 10 computed outputs = 32 tokens = 8 full blocks, in order
    assert len(hashes) == 8 and len(set(hashes)) == 8
    assert tokens == (prompt + r.tokens["a"])[:32]
    assert stored[0].parent_block_hash is None
    for prev, ev in zip(stored, stored[1:], strict=False):
        assert ev.parent_block_hash == prev.block_hashes[-1]
    for ev in stored:
        assert ev.block_size == 4 and ev.medium == "GPU" and ev.lora_id is None and ev.lora_name is None
        assert ev.extra_keys == [None] * len(ev.block_hashes)
        assert len(ev.token_ids) == 4 * len(ev.block_hashes)
        assert ev.group_idx == 0 and ev.kv_cache_spec_kind == "full_attention"


def test_cache_hit_blocks_are_not_reannounced() -> None:
    e = make_engine()
    prompt = list(range(16))
    e.add_request(req("a", prompt, max_tokens=1))
    first = _stored(run(e).events)
    e.add_request(req("b", prompt + [1, 2, 3, 4, 5], max_tokens=1))
    second = _stored(run(e).events)
    announced = {h for ev in first for h in ev.block_hashes}
    assert len(second) == 1
    # blocks 0-3 hit (b has 21 tokens); only the new block 4 is announced, chained on block 3
    assert second[0].parent_block_hash == first[0].block_hashes[3]
    assert second[0].token_ids == [1, 2, 3, 4]
    assert not announced & set(second[0].block_hashes)


def test_lora_events_carry_adapter_id_name_and_extra_keys() -> None:
    e = make_engine()
    e.add_request(req("a", list(range(8)), max_tokens=1, lora_name="lora1"))
    e.add_request(req("b", list(range(8)), max_tokens=1, lora_name="lora2"))
    stored = _stored(run(e).events)
    by_name = {ev.lora_name: ev for ev in stored}
    assert by_name["lora1"].lora_id == 1 and by_name["lora2"].lora_id == 2
    assert by_name["lora1"].extra_keys == [["lora1"], ["lora1"]]
    assert set(by_name["lora1"].block_hashes).isdisjoint(by_name["lora2"].block_hashes)


def test_cache_salt_is_an_extra_key_of_the_first_block_only() -> None:
    e = make_engine()
    e.add_request(req("a", list(range(12)), max_tokens=1, cache_salt="s1"))
    (ev,) = _stored(run(e).events)
    assert ev.extra_keys == [["s1"], None, None]


def test_eviction_emits_one_block_removed_per_evicted_block_tail_first() -> None:
    e = make_engine(num_gpu_blocks=6)
    e.add_request(req("a", list(range(0, 16)), max_tokens=1))
    (stored_a,) = _stored(run(e).events)  # a's 4 blocks 0-3, freed in reverse: queue 4 5 3 2 1 0
    e.add_request(req("b", list(range(100, 116)), max_tokens=1))  # needs 4 blocks: 4 5 3 2
    r = run(e)
    removed = [ev for ev in r.events if isinstance(ev, BlockRemoved)]
    assert [ev.block_hashes for ev in removed] == [[stored_a.block_hashes[3]], [stored_a.block_hashes[2]]]
    assert all(ev.medium == "GPU" for ev in removed)
    e.add_request(req("c", list(range(0, 9)), max_tokens=1))
    assert run(e).cached["c"] == 8  # a's head blocks survived


def test_hash_seed_changes_hashes_but_not_behaviour_and_spans_64_bits() -> None:
    def go(hash_seed: int) -> tuple[list[int], dict[str, list[int]]]:
        e = make_engine(hash_seed=hash_seed, num_gpu_blocks=512)
        e.add_request(req("a", list(range(1000)), max_tokens=5))
        r = run(e)
        return [int(h) for ev in _stored(r.events) for h in ev.block_hashes], r.tokens

    h0, t0 = go(0)
    h1, t1 = go(1)
    assert t0 == t1 and len(h0) == len(h1)
    assert set(h0).isdisjoint(h1)
    assert all(0 <= h < 2**64 for h in h0)
    assert any(h >= 2**63 for h in h0)


def test_reset_prefix_cache_refuses_while_busy_then_clears_on_next_step() -> None:
    e = make_engine()
    e.add_request(req("a", 8, max_tokens=3))
    e.step(0.0)
    assert e.reset_prefix_cache() is False
    run(e)
    assert e.reset_prefix_cache() is True
    assert e.has_work()
    out = e.step(1.0)
    assert out.kv_events == [AllBlocksCleared()] and out.duration_s == 0.0
    assert not e.has_work()
    e.add_request(req("b", 8, max_tokens=1))
    assert run(e).cached["b"] == 0


def test_engine_events_encode_like_the_vllm_capture() -> None:
    e = make_engine(block_size=32, num_gpu_blocks=16)
    e.add_request(req("a", list(range(70)), max_tokens=1))
    events = run(e).events
    ours = decode_payload(encode_payload(KVEventBatch(1.0, events, 0)))
    assert ours.events == events
    line = (REFERENCE / "kv_events.jsonl").read_text().splitlines()[0]
    theirs = json.loads(line)["decoded"][1][0]
    mine = json.loads(
        json.dumps(_stored(events)[0], default=lambda s: {f: getattr(s, f) for f in s.__struct_fields__})
    )
    assert set(theirs) - {"type"} <= set(mine) | {"kv_cache_spec_sliding_window"}
    assert mine["extra_keys"] == [None, None]
