"""``KVIndex.apply_batch`` and ``apply_hot`` (the inlined ingest fast paths) must leave exactly the state
the general ``store``/``remove``/``clear_endpoint`` calls leave, event by event, for every kind of stream."""

from __future__ import annotations

import json
import random
from collections import Counter
from functools import partial
from typing import Any

import msgspec
import pytest

from lanterna.kvindex.index import KVIndex
from lanterna.kvindex.ingest import HotStored, decode_hot
from lanterna.protocol.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVEventBatch,
    decode_payload,
    encode_payload,
    fold_hash,
)
from tests.conftest import REFERENCE

BS = 4


def random_stream(rng: random.Random, n: int, *, offload: bool, odd: bool, bad_id: int = 1 << 64) -> list[Any]:
    """Chains extended one block at a time (decode), multi-block prefills, the same blocks stored again
    under new vLLM hashes (a key already indexed: LRU refresh), removals, clears, and (``odd``) bytes
    hashes, LoRA, bad token ids, wrong block sizes, non-full-attention groups, unknown parents.

    ``bad_id``: ``1 << 64`` cannot be encoded (the event is counted bad); on the wire a negative id is
    hashed unchecked like any other (a key no prompt produces), which both paths must agree on."""
    evs: list[Any] = []
    live: list[int] = []
    h = 1
    for _ in range(n):
        r = rng.random()
        stores = [e for e in evs[-20:] if type(e) is BlockStored and type(e.block_hashes[0]) is int]
        if r < 0.1 and stores:
            old = rng.choice(stores)
            k = len(old.block_hashes)
            evs.append(BlockStored(list(range(h, h + k)), old.parent_block_hash, old.token_ids, old.block_size,
                                   lora_name=old.lora_name))
            live += range(h, h + k)
            h += k
        elif r < 0.45:  # extend a live block by one (decode-time event) or start a new chain
            parent = rng.choice(live) if live and rng.random() < 0.7 else None
            k = 1 if rng.random() < 0.7 else rng.randint(2, 5)
            toks = [rng.randrange(50) for _ in range(k * BS)]
            evs.append(BlockStored(list(range(h, h + k)), parent, toks, BS))
            live += range(h, h + k)
            h += k
        elif r < 0.75 and live:
            evs.append(BlockRemoved(rng.sample(live, min(len(live), rng.randint(1, 2)))))
        elif r < 0.8:
            evs.append(AllBlocksCleared())
        elif offload and live:
            medium = rng.choice(["CPU", "SHARED_STORAGE"])
            vh = rng.choice(live)
            if rng.random() < 0.6:
                evs.append(BlockStored([vh], None, [], BS, medium=medium))
            else:
                evs.append(BlockRemoved([vh], medium=medium))
        elif odd:
            c = rng.randrange(7)
            if c == 0 and live:
                evs.append(BlockStored([h.to_bytes(32, "big")], live[-1], [1] * BS, BS))
                live.append(h)
                h += 1
            elif c == 1:
                evs.append(BlockStored([h], None, [2] * BS, BS, lora_name="ad1"))
                h += 1
            elif c == 2:
                evs.append(BlockStored([h], None, [bad_id] + [0] * (BS - 1), BS))  # bad token id
                h += 1
            elif c == 3:
                evs.append(BlockStored([h], None, [3] * 8, 8))  # other block size: dropped
                h += 1
            elif c == 4:
                evs.append(BlockStored([h], None, [4] * BS, BS, kv_cache_spec_kind="sliding_window"))  # skipped
                h += 1
            elif c == 5:
                evs.append(BlockStored([h], None, [4] * BS, BS, kv_cache_spec_kind="a_future_kind"))  # skipped
                h += 1
            else:
                evs.append(BlockStored([h], 10**9, [4] * BS, BS))  # unknown parent
                h += 1
    return evs


def general(ix: KVIndex, eid: str, evs: list[Any], counts: Counter[str]) -> int:
    """The reference: one general call per event (what the applier did before the batch path)."""
    bad = 0
    for ev in evs:
        try:
            if isinstance(ev, BlockStored):
                if ev.kv_cache_spec_kind != "full_attention":
                    counts["BlockStored_skipped_kind"] += 1
                    continue
                parent = None if ev.parent_block_hash is None else fold_hash(ev.parent_block_hash)
                ix.store(eid, [fold_hash(x) for x in ev.block_hashes], parent, ev.token_ids, ev.block_size,
                         ev.medium, ev.lora_name)
            elif isinstance(ev, BlockRemoved):
                ix.remove(eid, [fold_hash(x) for x in ev.block_hashes], ev.medium)
            else:
                ix.clear_endpoint(eid)
            counts[type(ev).__name__] += 1
        except (ValueError, TypeError, OverflowError):
            bad += 1
    return bad


def state(ix: KVIndex) -> tuple[Any, ...]:
    return (list(ix._gpu.items()), ix._cpu, ix._sto, {e: list(s.hmap.items()) for e, s in ix._eps.items()},
            ix.counters)


def fresh(capacity: int, map_capacity: int) -> KVIndex:
    ix = KVIndex(capacity=capacity, map_capacity=map_capacity)
    ix.add_endpoint("x", "m", storage="nfs")
    ix.add_endpoint("a", "m", storage="nfs")
    ix.store("x", [10**12], None, [9] * BS, BS)  # another endpoint's entries must survive untouched
    return ix


@pytest.mark.parametrize(("offload", "odd", "batch"), [(False, False, 1), (False, False, 16), (True, False, 8),
                                                        (False, True, 8), (True, True, 64)],
                         ids=["gpu-single", "gpu-batches", "offload", "odd-events", "everything"])
def test_batch_path_equals_general_path(offload: bool, odd: bool, batch: int) -> None:
    for seed in range(5):
        evs = random_stream(random.Random(seed), 400, offload=offload, odd=odd)
        fast, ref = fresh(10**6, 10**6), fresh(10**6, 10**6)
        counts: Counter[str] = Counter()
        want_counts: Counter[str] = Counter()
        bad: list[int] = []
        want_bad = 0
        for i in range(0, len(evs), batch):
            fast.apply_batch("a", evs[i : i + batch], counts, partial(bad.append, 1))
            want_bad += general(ref, "a", evs[i : i + batch], want_counts)
            assert state(fast) == state(ref), f"seed {seed}, after event {i + batch}"
        assert len(bad) == want_bad
        if odd and not offload:
            assert want_bad > 0  # the bad-token branch ran
        assert counts == want_counts
        assert ref.counters.num_blocks_removed > 0


def test_bounds_hold_after_every_batch() -> None:
    rng = random.Random(7)
    evs = [BlockStored([i], None, [rng.randrange(50) for _ in range(BS)], BS) for i in range(1, 1000)]
    ix = fresh(120, 80)
    for i in range(0, len(evs), 32):
        ix.apply_batch("a", evs[i : i + 32], Counter(), lambda: None)
        assert len(ix) <= 120 and ix.num_blocks("a") <= 80
    assert ix.counters.num_keys_evicted + ix.counters.num_map_evicted > 0


@pytest.mark.parametrize(("offload", "odd", "batch", "encoding"),
                         [(False, False, 1, "map"), (False, False, 16, "map"), (True, False, 8, "map"),
                          (False, True, 4, "map"), (True, True, 2, "map"), (False, True, 8, "array")],
                         ids=["gpu-single", "gpu-batches", "offload", "odd-events", "everything", "legacy-array"])
def test_wire_path_equals_general_path(offload: bool, odd: bool, batch: int, encoding: str) -> None:
    """Payloads as the applier sees them: ``decode_hot`` + ``apply_hot`` where the payload is hot, else
    ``decode_payload`` + ``apply_batch`` (the applier's fallback)."""
    num_hot = num_hot_events = num_fallback = 0
    for seed in range(5):
        evs = random_stream(random.Random(seed), 400, offload=offload, odd=odd, bad_id=-1)
        fast, ref = fresh(10**6, 10**6), fresh(10**6, 10**6)
        counts: Counter[str] = Counter()
        want_counts: Counter[str] = Counter()
        bad: list[int] = []
        want_bad = 0
        for i in range(0, len(evs), batch):
            payload = encode_payload(KVEventBatch(0.0, evs[i : i + batch], 0), encoding)  # type: ignore[arg-type]
            try:
                hot = decode_hot(payload)
            except msgspec.DecodeError:
                num_fallback += 1
                fast.apply_batch("a", decode_payload(payload).events, counts, partial(bad.append, 1))
            else:
                num_hot += 1
                num_hot_events += sum(type(e) is HotStored for e in hot.events)
                fast.apply_hot("a", hot.events, counts, partial(bad.append, 1))
            want_bad += general(ref, "a", evs[i : i + batch], want_counts)
            assert state(fast) == state(ref), f"seed {seed}, after event {i + batch}"
        assert len(bad) == want_bad
        assert counts == want_counts
    if encoding == "array":
        assert num_hot == 0  # the legacy encoding is never mistaken for the hot one
    else:
        assert num_hot_events > 100  # the hot path really ran...
        assert (num_fallback > 0) == (odd or offload)  # ...and the fallback exactly when needed


def test_hot_decoder_rejects_what_it_cannot_prove() -> None:
    """Each precondition of the hot loop is a type in the hot decoder: anything else must fail to decode."""
    toks = [1] * BS
    ok = BlockStored([1], None, toks, BS)
    for ev in [BlockStored([b"\x01" * 32], None, toks, BS), BlockStored([1], b"\x02" * 32, toks, BS),
               BlockStored([1], None, toks, BS, lora_id=3), BlockStored([1], None, toks, BS, lora_name="x"),
               BlockStored([1], None, [], BS, medium="CPU"), BlockRemoved([1], medium="SHARED_STORAGE"),
               BlockRemoved([b"\x01" * 32])]:
        with pytest.raises(msgspec.DecodeError):
            decode_hot(encode_payload(KVEventBatch(0.0, [ok, ev], 0)))
    assert len(decode_hot(encode_payload(KVEventBatch(0.0, [ok, BlockRemoved([1], medium=None)], 0))).events) == 2


def test_captured_vllm_payloads_take_the_hot_path() -> None:
    """Real vLLM 0.32 payloads decode hot unless they carry LoRA (then the general path takes them)."""
    lines = [json.loads(x) for x in (REFERENCE / "kv_events.jsonl").read_text().splitlines()]
    num_hot = 0
    for r in lines:
        payload = msgspec.msgpack.encode(r["decoded"])
        if any(ev.get("lora_id") is not None for ev in r["decoded"][1]):
            with pytest.raises(msgspec.DecodeError):
                decode_hot(payload)
        else:
            assert len(decode_hot(payload).events) == len(decode_payload(payload).events)
            num_hot += 1
    assert num_hot >= len(lines) - 2


@pytest.mark.parametrize("kind, indexed", [("full_attention", True), ("mla_attention", True),
                                           ("sink_full_attention", True), ("sliding_window", False),
                                           ("mamba", False)], ids=lambda v: str(v))
def test_prefix_cache_kinds_are_indexed_and_others_skipped(kind: str, indexed: bool) -> None:
    from lanterna.kvindex.apply import EventApplier
    from lanterna.kvindex.index import KVIndex
    from lanterna.protocol.kv_events import KVEventBatch, encode_payload, encode_seq

    ap = EventApplier(KVIndex(capacity=100))
    ap.add_endpoint("e0", "m")
    ev = BlockStored([11, 12], None, list(range(2 * BS)), BS, kv_cache_spec_kind=kind)
    ap.ingest("e0", [b"kv@e0@m", encode_seq(0), encode_payload(KVEventBatch(0.0, [ev], 0))])
    assert (ap.index.counters.num_blocks_stored == 2) is indexed
