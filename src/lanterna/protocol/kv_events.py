"""vLLM KV-cache events (PROTOCOLS.md section 1) as msgspec Structs, with both encodings.

Wire: ZMQ PUB, 3 frames ``[topic utf-8, seq 8-byte big-endian, payload msgpack]``. The payload is
``[ts, events, data_parallel_rank]``. vLLM >= ~0.26 sends each event as a map with a ``"type"`` key
(the "map" encoding); older releases send ``[tag, field1, field2, ...]`` (the "array" encoding).
Decoding accepts both and ignores unknown fields; encoding emits every field, as vLLM 0.32 does.
"""

from __future__ import annotations

import struct
from typing import Any, Literal

import msgspec

BlockHash = int | bytes

MEDIUM_GPU = "GPU"
MEDIUM_CPU = "CPU"
MEDIUM_STORAGE = "STORAGE"
MEDIUM_SHARED_STORAGE = "SHARED_STORAGE"
MEDIUM_OBJECT_STORE = "OBJECT_STORE"

REPLAY_END_SEQ = 0xFFFFFFFFFFFFFFFF
_SEQ = struct.Struct(">Q")


class BlockStored(msgspec.Struct, tag=True, tag_field="type", gc=False):
    block_hashes: list[BlockHash]
    parent_block_hash: BlockHash | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = MEDIUM_GPU
    lora_name: str | None = None
    extra_keys: list[Any] | None = None
    group_idx: int = 0
    kv_cache_spec_kind: str = "full_attention"
    kv_cache_spec_sliding_window: int | None = None


class BlockRemoved(msgspec.Struct, tag=True, tag_field="type", gc=False):
    block_hashes: list[BlockHash]
    medium: str | None = MEDIUM_GPU
    group_idx: int = 0


class AllBlocksCleared(msgspec.Struct, tag=True, tag_field="type", gc=False):
    pass


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


class KVEventBatch(msgspec.Struct, array_like=True, gc=False):
    ts: float
    events: list[KVEvent]
    data_parallel_rank: int | None = None


# Legacy positional-array encoding: same fields, ``[tag, ...]``.
class _LegacyBlockStored(msgspec.Struct, tag="BlockStored", array_like=True, gc=False):
    block_hashes: list[BlockHash]
    parent_block_hash: BlockHash | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = MEDIUM_GPU
    lora_name: str | None = None
    extra_keys: list[Any] | None = None
    group_idx: int = 0
    kv_cache_spec_kind: str = "full_attention"
    kv_cache_spec_sliding_window: int | None = None


class _LegacyBlockRemoved(msgspec.Struct, tag="BlockRemoved", array_like=True, gc=False):
    block_hashes: list[BlockHash]
    medium: str | None = MEDIUM_GPU
    group_idx: int = 0


class _LegacyAllBlocksCleared(msgspec.Struct, tag="AllBlocksCleared", array_like=True, gc=False):
    pass


class _LegacyBatch(msgspec.Struct, array_like=True, gc=False):
    ts: float
    events: list[_LegacyBlockStored | _LegacyBlockRemoved | _LegacyAllBlocksCleared]
    data_parallel_rank: int | None = None


# What vLLM 0.32 puts on the wire: every field, except the sliding window when it is unset.
class _WireBlockStored(msgspec.Struct, tag="BlockStored", tag_field="type", omit_defaults=True, gc=False):
    block_hashes: list[BlockHash]
    parent_block_hash: BlockHash | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[Any] | None
    group_idx: int
    kv_cache_spec_kind: str
    kv_cache_spec_sliding_window: int | None = None


class _WireBatch(msgspec.Struct, array_like=True, gc=False):
    ts: float
    events: list[_WireBlockStored | BlockRemoved | AllBlocksCleared]
    data_parallel_rank: int | None = None


def _to_wire(ev: KVEvent) -> _WireBlockStored | BlockRemoved | AllBlocksCleared:
    if isinstance(ev, BlockStored):
        return _WireBlockStored(*(getattr(ev, f) for f in ev.__struct_fields__))
    return ev


_map_decoder = msgspec.msgpack.Decoder(KVEventBatch)
_legacy_decoder = msgspec.msgpack.Decoder(_LegacyBatch)
_encoder = msgspec.msgpack.Encoder()


class KVEventDecodeError(ValueError):
    """A payload that is neither encoding; the subscriber counts and drops it."""


def _from_legacy(ev: Any) -> KVEvent:
    if isinstance(ev, _LegacyBlockStored):
        return BlockStored(**{f: getattr(ev, f) for f in ev.__struct_fields__})
    if isinstance(ev, _LegacyBlockRemoved):
        return BlockRemoved(ev.block_hashes, ev.medium, ev.group_idx)
    return AllBlocksCleared()


def decode_payload(payload: bytes) -> KVEventBatch:
    """Decode a payload frame in either encoding."""
    try:
        return _map_decoder.decode(payload)
    except msgspec.DecodeError:
        pass
    try:
        legacy = _legacy_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise KVEventDecodeError(f"undecodable KV event payload: {exc}") from exc
    return KVEventBatch(legacy.ts, [_from_legacy(e) for e in legacy.events], legacy.data_parallel_rank)


def encode_payload(batch: KVEventBatch, encoding: Literal["map", "array"] = "map") -> bytes:
    """Encode a batch the way vLLM does (map: 0.26+; array: legacy)."""
    if encoding == "map":
        wire = _WireBatch(batch.ts, [_to_wire(e) for e in batch.events], batch.data_parallel_rank)
        return _encoder.encode(wire)
    events: list[list[Any]] = []
    for ev in batch.events:
        tag = type(ev).__name__
        events.append([tag, *(getattr(ev, f) for f in ev.__struct_fields__)])
    return _encoder.encode([batch.ts, events, batch.data_parallel_rank])


def encode_seq(seq: int) -> bytes:
    return _SEQ.pack(seq)


def decode_seq(frame: bytes) -> int:
    if len(frame) != 8:
        raise KVEventDecodeError(f"sequence frame must be 8 bytes, got {len(frame)}")
    return int(_SEQ.unpack(frame)[0])


def fold_hash(h: BlockHash) -> int:
    """vLLM int hashes are the last 8 bytes of the digest, big-endian; fold raw bytes the same way."""
    if isinstance(h, int):
        return h
    return int.from_bytes(h[-8:], "big")


def topic_for(host_port: str, model: str) -> str:
    """``kv@<ip>:<port>@<model>``, the topic llm-d expects."""
    return f"kv@{host_port}@{model}"
