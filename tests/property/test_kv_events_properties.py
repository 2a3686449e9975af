"""Properties of the KV-event decoder and the ingest path (hypothesis; pure, no sockets).

- ``decode_payload`` on any bytes returns a batch or raises ``KVEventDecodeError``, nothing else;
- ``EventApplier.ingest`` on any frames (random bytes, random msgpack, corrupted valid payloads) never
  raises: garbage is counted in ``counters.malformed`` and the index keeps its bounds;
- a valid batch built from strategies round-trips through both encodings (map and legacy array);
- the hot and general ingest paths leave the same index for the same valid payload.
"""

from __future__ import annotations

import os

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lanterna.kvindex.apply import EventApplier, Verdict
from lanterna.kvindex.index import KVIndex
from lanterna.protocol.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVEventBatch,
    KVEventDecodeError,
    decode_payload,
    encode_payload,
    encode_seq,
)

SETTINGS = settings(max_examples=int(os.environ.get("LANTERNA_PROPERTY_EXAMPLES", "60")), deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
BS = 4
EP = "ep"

u64 = st.integers(min_value=0, max_value=2**64 - 1)
block_hash = st.one_of(u64, st.binary(min_size=1, max_size=32))
media = st.sampled_from([None, "GPU", "CPU", "STORAGE", "SHARED_STORAGE", "OBJECT_STORE"])
kinds = st.sampled_from(["full_attention", "sliding_window", "mla_attention", "mamba"])


@st.composite
def block_stored(draw: st.DrawFn) -> BlockStored:
    n = draw(st.integers(1, 3))
    return BlockStored(
        block_hashes=draw(st.lists(block_hash, min_size=n, max_size=n)),
        parent_block_hash=draw(st.none() | block_hash),
        token_ids=draw(st.lists(st.integers(0, 2**31 - 1), min_size=0, max_size=n * BS)),
        block_size=draw(st.sampled_from([BS, 16])),
        lora_id=draw(st.none() | st.integers(0, 2**31)),
        medium=draw(media),
        lora_name=draw(st.none() | st.text(max_size=8)),
        extra_keys=draw(st.none() | st.lists(st.integers() | st.text(max_size=4), max_size=2)),
        group_idx=draw(st.integers(0, 3)),
        kv_cache_spec_kind=draw(kinds),
        kv_cache_spec_sliding_window=draw(st.none() | st.integers(1, 4096)),
    )


events = st.one_of(
    block_stored(),
    st.builds(BlockRemoved, st.lists(block_hash, max_size=4), media, st.integers(0, 3)),
    st.just(AllBlocksCleared()),
)
batches = st.builds(KVEventBatch, st.floats(allow_nan=False, allow_infinity=False), st.lists(events, max_size=6),
                    st.none() | st.integers(0, 7))

# arbitrary msgpack-able values, biased towards the payload's outer shape [ts, [events], rank]
_leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=6) | st.binary(
    max_size=6) | st.sampled_from(["BlockStored", "BlockRemoved", "AllBlocksCleared", "type", "GPU"])
_any = st.recursive(_leaf, lambda c: st.lists(c, max_size=5) | st.dictionaries(
    st.sampled_from(["type", "block_hashes", "parent_block_hash", "token_ids", "block_size", "medium",
                     "lora_id", "lora_name", "group_idx", "kv_cache_spec_kind"]) | st.text(max_size=4), c,
    max_size=6), max_leaves=25)
_payload_like = st.tuples(_any | st.floats(), st.lists(_any, max_size=5), _any).map(list)
garbage = st.one_of(st.binary(max_size=200), _any.map(msgspec.msgpack.encode), _payload_like.map(msgspec.msgpack.encode))


def _applier(capacity: int = 64) -> EventApplier:
    a = EventApplier(KVIndex(capacity=capacity))
    a.add_endpoint(EP, "m")
    return a


@SETTINGS
@given(garbage)
def test_decode_payload_raises_only_its_error(data: bytes) -> None:
    try:
        batch = decode_payload(data)
    except KVEventDecodeError:
        return
    assert isinstance(batch, KVEventBatch)


@SETTINGS
@given(st.lists(garbage, min_size=1, max_size=8), st.data())
def test_ingest_never_raises_and_counts_garbage(payloads: list[bytes], data: st.DataObject) -> None:
    a = _applier()
    for seq, p in enumerate(payloads):
        frames = data.draw(st.sampled_from([
            [b"kv@x@m", encode_seq(seq), p],  # well-framed garbage
            [b"kv@x@m", p[:8], p],  # a sequence frame made of garbage
            [p],  # wrong frame count
        ]))
        verdict = a.ingest(EP, frames)
        assert isinstance(verdict, Verdict)
    c = a.counters
    assert c.num_messages == len(payloads)
    assert len(a.index._gpu) <= a.index.capacity


@SETTINGS
@given(batches, st.sampled_from(["map", "array"]))
def test_valid_batches_round_trip_both_encodings(batch: KVEventBatch, encoding: str) -> None:
    assert decode_payload(encode_payload(batch, encoding)) == batch  # type: ignore[arg-type]


@SETTINGS
@given(batches, st.integers(0, 255), st.integers(0, 255))
def test_corrupted_valid_payload_is_decoded_or_counted(batch: KVEventBatch, pos: int, byte: int) -> None:
    raw = bytearray(encode_payload(batch))
    raw[pos % len(raw)] = byte
    a = _applier()
    verdict = a.ingest(EP, [b"kv@x@m", encode_seq(0), bytes(raw)])
    assert verdict in (Verdict.APPLIED, Verdict.MALFORMED)
    if verdict is Verdict.MALFORMED:
        assert a.counters.malformed["payload"] == 1


@st.composite
def gpu_stream(draw: st.DrawFn) -> list[BlockStored | BlockRemoved | AllBlocksCleared]:
    """Common-case events (GPU, int hashes, no LoRA, block size BS) that chain on earlier blocks."""
    out: list[BlockStored | BlockRemoved | AllBlocksCleared] = []
    live: list[int] = []
    h = 1
    for _ in range(draw(st.integers(1, 12))):
        r = draw(st.integers(0, 9))
        if r < 6:
            n = draw(st.integers(1, 3))
            parent = draw(st.sampled_from(live)) if live and draw(st.booleans()) else None
            toks = draw(st.lists(st.integers(0, 1000), min_size=n * BS, max_size=n * BS))
            out.append(BlockStored(list(range(h, h + n)), parent, toks, BS))
            live += range(h, h + n)
            h += n
        elif r < 9 and live:
            out.append(BlockRemoved(draw(st.lists(st.sampled_from(live), min_size=1, max_size=2, unique=True))))
        else:
            out.append(AllBlocksCleared())
    return out


@SETTINGS
@given(gpu_stream())
def test_hot_and_general_ingest_agree(evs: list[BlockStored | BlockRemoved | AllBlocksCleared]) -> None:
    hot, general = _applier(1 << 12), _applier(1 << 12)
    for seq, ev in enumerate(evs):
        payload = encode_payload(KVEventBatch(float(seq), [ev]))
        assert hot.ingest(EP, [b"kv@x@m", encode_seq(seq), payload]) is Verdict.APPLIED
        general.apply_events(EP, decode_payload(payload).events)
    assert hot.index._gpu == general.index._gpu
    assert hot.index._eps[EP].hmap == general.index._eps[EP].hmap
    assert not hot.counters.malformed


@pytest.mark.parametrize("frames", [[], [b""], [b"", b"", b"", b""], [b"t", b"\x00" * 8, b""]])
def test_degenerate_frames_are_counted(frames: list[bytes]) -> None:
    a = _applier()
    assert a.ingest(EP, frames) is Verdict.MALFORMED
    assert sum(a.counters.malformed.values()) == 1
