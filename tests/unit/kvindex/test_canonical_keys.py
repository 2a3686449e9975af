"""Block keys over canonical msgpack bytes: every token form and both sides (events, prompts) agree."""

from __future__ import annotations

import random
from array import array
from collections import Counter

import msgspec
import pytest

from lanterna.kvindex.hashing import (
    TokenIds,
    array_header,
    block_keys,
    chain_keys,
    chain_keys_from,
    hash_block,
    root_key,
)
from lanterna.kvindex.index import KVIndex
from lanterna.kvindex.ingest import decode_hot
from lanterna.protocol.kv_events import BlockStored, KVEventBatch, encode_payload
from lanterna.scheduler.plugins.scorer.pending import PendingPrefixes
from tests.unit.scheduler.helpers import req

# every msgpack int width: fixint, uint8, uint16, uint32 (and their edges)
EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, (1 << 32) - 1]


@pytest.mark.parametrize("bs", [4, 15, 16, 20])  # fixarray and array16 headers
def test_all_token_forms_give_the_same_keys(bs: int) -> None:
    rng = random.Random(bs)
    for _ in range(20):
        toks = [rng.choice(EDGES) if rng.random() < 0.3 else rng.randrange(1 << 18) for _ in range(rng.randrange(0, 300))]
        want = chain_keys(toks, bs, 7, len(toks) // bs)
        # a block's key input is exactly msgspec's encoding of its id list
        assert want[:1] == [hash_block(msgspec.msgpack.encode(toks[:bs]), 7)][: len(want)]
        for form in (toks, tuple(toks), array("I", toks), TokenIds.of(toks), TokenIds.of(tuple(toks))):
            assert block_keys(form, bs, 7) == want
        for start in range(0, len(want), 5):
            parent = want[start - 1] if start else 7
            assert chain_keys_from(TokenIds.of(toks), bs, parent, start, len(want)) == want[start:]
            assert chain_keys_from(toks, bs, parent, start, len(want)) == want[start:]


def test_array_header_is_msgspecs() -> None:
    for n in (0, 1, 15, 16, 65535, 65536):
        assert msgspec.msgpack.encode([0] * n).startswith(array_header(n))


def test_one_block_events_raw_field_is_the_block_bytes() -> None:
    """The hot path hashes a one-block event's raw ``token_ids``: it must equal what a prompt hashes."""
    toks = [5, 300, 70000, 127, 128, 65536, 0, 255, 256, 9, 1 << 31, 3, 4, 5, 6, 7]
    hot = decode_hot(encode_payload(KVEventBatch(0.0, [BlockStored([1], None, toks, 16)], 0)))
    assert hash_block(hot.events[0].token_ids, 9) == block_keys(toks, 16, 9)[0]


def test_token_less_gpu_event_on_the_hot_path_resolves_through_the_map() -> None:
    ix = KVIndex()
    ix.add_endpoint("a", "m")
    toks = list(range(300, 316))
    for ev in (BlockStored([1], None, toks, 16), BlockStored([1], None, [], 16)):
        hot = decode_hot(encode_payload(KVEventBatch(0.0, [ev], 0)))
        ix.apply_hot("a", hot.events, Counter(), lambda: None)
    assert len(ix) == 1 and ix.match("m", None, toks, ["a"]) == {"a": 1.0}
    assert block_keys(toks, 16, root_key("m"))[0] in ix._gpu


def test_pending_keys_are_the_same_for_lists_and_token_ids() -> None:
    toks = [random.Random(3).randrange(100_000) for _ in range(16 * 16 * 5 + 7)]
    a, b = req("p", token_ids=toks), req("p", token_ids=TokenIds.of(toks))
    p = PendingPrefixes()
    assert p._keys(a, 16) == p._keys(b, 16) and len(p._keys(a, 16)) == 5
    assert p._keys(req("p", token_ids=TokenIds.of(toks)), 16, 2) == p._keys(a, 16)[:2]


@pytest.mark.parametrize("hole", [None, 0, 63, 64, 65, 150])
def test_long_prompt_walk_agrees_for_every_token_form(hole: int | None) -> None:
    """The fused walk (Canon slices past the first 64 blocks, per-block encode for lists) stops exactly
    at the first block the endpoint does not hold."""
    rng = random.Random(5)
    toks = [rng.randrange(200_000) for _ in range(16 * 200 + 3)]
    ix = KVIndex()
    ix.add_endpoint("a", "m")
    ix.add_endpoint("b", "m")
    ix.store("a", list(range(1, 201)), None, toks[: 16 * 200], 16)
    ix.store("b", list(range(1001, 1011)), None, toks[:160], 16)
    if hole is not None:
        ix.remove("a", [hole + 1])
    want = {"a": float(200 if hole is None else hole), "b": 10.0}
    for form in (toks, tuple(toks), array("I", toks), TokenIds.of(toks)):
        assert ix.match("m", None, form, ["a", "b"]) == want
