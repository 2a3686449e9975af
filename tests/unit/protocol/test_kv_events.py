"""Golden tests of the KV-event codec against events captured from real vLLM 0.32."""

from __future__ import annotations

import json

import msgpack
import pytest
from tests.conftest import REFERENCE

from lanterna.protocol.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVEventBatch,
    KVEventDecodeError,
    decode_payload,
    decode_seq,
    encode_payload,
    encode_seq,
    fold_hash,
    topic_for,
)

CAPTURED = [json.loads(line) for line in (REFERENCE / "kv_events.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("msg", CAPTURED, ids=[f"seq{m['seq']}" for m in CAPTURED])
def test_captured_batches_decode_and_reencode_identically(msg: dict) -> None:
    raw = msgpack.packb(msg["decoded"])
    batch = decode_payload(raw)
    assert all(isinstance(e, BlockStored) for e in batch.events)
    for ev in batch.events:
        assert len(ev.token_ids) == len(ev.block_hashes) * ev.block_size
    assert msgpack.unpackb(encode_payload(batch)) == msg["decoded"]


def test_legacy_array_encoding_round_trips_and_tolerates_short_and_long_arrays() -> None:
    batch = KVEventBatch(
        1.5,
        [
            BlockStored([2**64 - 1, 7], None, list(range(32)), 16, None, "GPU", None, [None, None]),
            BlockRemoved([7], "CPU"),
            AllBlocksCleared(),
        ],
        0,
    )
    assert decode_payload(encode_payload(batch, "array")) == batch
    short = msgpack.packb([1.0, [["BlockStored", [1], None, [0] * 16, 16, None], ["BlockRemoved", [1]]], None])
    ev = decode_payload(short).events
    assert ev[0].medium == "GPU" and ev[1] == BlockRemoved([1], "GPU")
    longer = msgpack.packb([1.0, [["BlockRemoved", [1], "GPU", 0, "future-field"]], None])
    assert decode_payload(longer).events == [BlockRemoved([1], "GPU", 0)]


def test_map_encoding_omits_unset_sliding_window_like_vllm() -> None:
    batch = KVEventBatch(0.0, [BlockStored([1], None, [0] * 16, 16)], None)
    ev = msgpack.unpackb(encode_payload(batch))[1][0]
    assert ev["type"] == "BlockStored" and "kv_cache_spec_sliding_window" not in ev
    assert ev["lora_name"] is None and ev["group_idx"] == 0


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", msgpack.packb({"not": "a batch"}), msgpack.packb([1.0, [{"type": "Nope"}], None]),
     msgpack.packb([1.0, [["Mystery", 1]], None]), msgpack.packb([1.0, [{"type": "BlockStored"}], None])],
    ids=["empty", "garbage", "map", "unknown-map-type", "unknown-array-tag", "missing-fields"],
)
def test_bad_payloads_raise_one_error_type(payload: bytes) -> None:
    with pytest.raises(KVEventDecodeError):
        decode_payload(payload)


def test_seq_hash_and_topic_helpers() -> None:
    assert decode_seq(encode_seq(2**64 - 1)) == 2**64 - 1
    with pytest.raises(KVEventDecodeError):
        decode_seq(b"\x00" * 7)
    assert fold_hash(b"\x00" * 24 + (5).to_bytes(8, "big")) == 5
    assert topic_for("127.0.0.1:8000", "tiny") == "kv@127.0.0.1:8000@tiny"
