"""The ingest hot path: one payload's events -> index updates, with the per-event cost cut down (pure).

While decoding, vLLM announces about one one-block ``BlockStored`` per running request per step (and
one ``BlockRemoved`` per evicted block), so the fixed cost per event dominates ingest. Two entry points:

- ``decode_hot`` + ``apply_hot``: the common payload (map encoding, int hashes, GPU tier, no LoRA) is
  decoded into lean Structs whose *types are the preconditions* (``medium: Literal["GPU"] | None``, LoRA
  fields typed ``None``, hashes ``int``), so the loop re-checks nothing the decoder already proved.
  Any other payload fails to decode here (``msgspec.DecodeError``) and takes the general path.
- ``apply_batch``: any list of decoded ``KVEvent``s (``decode_payload``; also the in-process virtual
  cluster). The common event runs inline; the rest goes through ``KVIndex.store``/``remove``.

NOTE: both leave exactly the state one ``store``/``remove``/``clear_endpoint`` call per event leaves
(tests/unit/kvindex/test_apply_batch.py); this module is the index's friend and updates its dicts
directly, so any change to ``KVIndex``'s layout must be mirrored here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from lanterna.kvindex.hashing import (
    TokenIdOutOfRange,
    array_header,
    chain_keys,
    decode_ids,
    encode,
    hash_block,
)
from lanterna.protocol.kv_events import MEDIUM_GPU, AllBlocksCleared, BlockRemoved, BlockStored, fold_hash

if TYPE_CHECKING:
    from lanterna.kvindex.index import KVIndex

# Kinds whose blocks are a plain prefix cache (the prompt's full KV, MLA's latent KV included): a prefix
# hit there is a real hit. Sliding-window, mamba and the rest are skipped and counted.
_INDEXED_KINDS = frozenset({"full_attention", "mla_attention", "sink_full_attention"})
# vLLM 0.32's KVCacheSpecKind values; a kind added later makes its payloads take the general path
_Kind = Literal[
    "full_attention",
    "mla_attention",
    "sliding_window",
    "sliding_window_mla",
    "mamba",
    "chunked_local_attention",
    "sink_full_attention",
    "encoder_only_attention",
    "cross_attention",
    "unknown",
]
_BAD_EVENT = (TokenIdOutOfRange, msgspec.DecodeError, ValueError, TypeError, OverflowError)


# -- the hot decoder: same wire format as protocol.kv_events (map encoding), narrower types ----------
class HotStored(msgspec.Struct, tag="BlockStored", tag_field="type", gc=False):
    block_hashes: tuple[int, ...]
    parent_block_hash: int | None
    token_ids: msgspec.Raw  # the block's canonical bytes as sent: a one-block event is hashed as is
    block_size: int
    lora_id: None = None
    medium: Literal["GPU"] | None = "GPU"
    lora_name: None = None
    extra_keys: list[Any] | None = None  # kept so validation matches the full decoder exactly
    group_idx: int = 0
    kv_cache_spec_kind: _Kind = "full_attention"  # a Literal decodes to an interned str: no allocation per event
    kv_cache_spec_sliding_window: int | None = None


class HotRemoved(msgspec.Struct, tag="BlockRemoved", tag_field="type", gc=False):
    block_hashes: tuple[int, ...]
    medium: Literal["GPU"] | None = "GPU"
    group_idx: int = 0


class HotCleared(msgspec.Struct, tag="AllBlocksCleared", tag_field="type", gc=False):
    pass


class HotBatch(msgspec.Struct, array_like=True, gc=False):
    ts: float
    events: list[HotStored | HotRemoved | HotCleared]
    data_parallel_rank: int | None = None


decode_hot: Callable[[bytes], HotBatch] = msgspec.msgpack.Decoder(HotBatch).decode
"""Decode a payload that holds only hot events; raises ``msgspec.DecodeError`` for anything else."""

def apply_hot(
    ix: KVIndex, endpoint_id: str, events: Sequence[Any], counts: Counter[str], on_bad: Callable[[], object]
) -> None:
    """Apply a ``HotBatch``'s events in order; ``on_bad`` is called for an event with bad fields (dropped).

    Per one-block event: 5 attribute loads, xxh3 of the raw ``token_ids`` bytes (no ints are created),
    one map lookup (parent), one map store and one pop+store on the LRU-ordered GPU dict. Multi-block
    events decode their ids and re-encode each block (canonical bytes). Bounds: once per payload."""
    ep = ix._eps[endpoint_id]
    hmap, gpu, cpu, sto = ep.hmap, ix._gpu, ix._cpu, ix._sto
    gpop = gpu.pop
    bit, clear = ep.bit, ~ep.bit
    bs = ix._block_size.get(ep.model) or -1  # -1 (unset) fails the size check: the general store sets it
    short = len(array_header(bs)) + bs if bs > 0 else 0  # fewer raw bytes than this: not one full block
    root = ix.root(ep.model, None)
    xxh, enc, stored, removed, indexed = hash_block, encode, HotStored, HotRemoved, _INDEXED_KINDS
    n_stored = n_removed = n_ev_stored = n_ev_removed = n_unresolved = n_unknown = 0
    for ev in events:
        t = type(ev)
        try:
            if t is stored:
                hashes, toks = ev.block_hashes, ev.token_ids
                n = len(hashes)
                if ev.block_size != bs or len(toks) < short or not n or ev.kv_cache_spec_kind not in indexed:
                    if ev.kv_cache_spec_kind not in indexed:
                        counts["BlockStored_skipped_kind"] += 1
                        continue
                    # first event of the model, wrong block size, token-less: the general store decides
                    ix.store(endpoint_id, hashes, ev.parent_block_hash, decode_ids(toks), ev.block_size, MEDIUM_GPU)
                    n_ev_stored += 1
                    bs = ix._block_size.get(ep.model) or -1
                    short = len(array_header(bs)) + bs if bs > 0 else 0
                    continue
                parent = ev.parent_block_hash
                if parent is None:
                    h = root
                else:
                    try:  # a subscript is cheaper than .get(); a miss is rare
                        h = hmap[parent]
                    except KeyError:
                        n_unresolved += 1
                        n_ev_stored += 1
                        continue
                if n == 1:
                    # the raw field is the block's canonical bytes (its header says how many ids it
                    # holds, so a wrong count only yields a key no prompt produces)
                    h = xxh(toks, h)
                    hmap[hashes[0]] = h
                    # re-inserting moves a key to the young end (LRU); `in` is cheaper than pop(h, 0)
                    gpu[h] = (gpop(h) | bit) if h in gpu else bit
                else:
                    ids = decode_ids(toks)
                    if len(ids) != n * bs:
                        ix.store(endpoint_id, hashes, parent, ids, ev.block_size, MEDIUM_GPU)  # counts it
                        n_ev_stored += 1
                        continue
                    off = 0
                    for vh in hashes:
                        h = xxh(enc(ids[off : off + bs]), h)
                        off += bs
                        hmap[vh] = h
                        gpu[h] = (gpop(h) | bit) if h in gpu else bit
                n_stored += n
                n_ev_stored += 1
            elif t is removed:
                if cpu or sto:  # offload tiers indexed: the map entry may outlive the GPU bit
                    ix.remove(endpoint_id, ev.block_hashes, MEDIUM_GPU)
                    n_ev_removed += 1
                    continue
                for vh in ev.block_hashes:
                    key = hmap.pop(vh, -1)
                    if key == -1:
                        n_unknown += 1
                        continue
                    m = gpu.get(key, 0) & clear
                    if m:
                        gpu[key] = m
                    else:
                        gpop(key, None)
                    n_removed += 1
                n_ev_removed += 1
            else:
                ix.clear_endpoint(endpoint_id)
                hmap = ep.hmap  # clear_endpoint replaces the map
                counts["AllBlocksCleared"] += 1
        except _BAD_EVENT:
            on_bad()
    _finish(ix, ep, counts, n_stored, n_removed, n_ev_stored, n_ev_removed, n_unresolved, n_unknown)


def apply_batch(
    ix: KVIndex, endpoint_id: str, events: Sequence[Any], counts: Counter[str], on_bad: Callable[[], object]
) -> None:
    """Apply decoded ``KVEvent``s in order: the common event (GPU tier, int hashes, no LoRA, the model's
    block size; removals while only the GPU tier is indexed) inline, anything else via ``store``/``remove``."""
    ep = ix._eps[endpoint_id]
    hmap, gpu = ep.hmap, ix._gpu
    gpop, hget = gpu.pop, hmap.get
    bit, clear = ep.bit, ~ep.bit
    bs = ix._block_size.get(ep.model)
    root = ix.root(ep.model, None)
    xxh, enc = hash_block, encode
    n_stored = n_removed = n_ev_stored = n_ev_removed = n_unresolved = n_unknown = 0
    for ev in events:
        t = type(ev)
        try:
            if t is BlockStored:
                if ev.kv_cache_spec_kind not in _INDEXED_KINDS:
                    counts["BlockStored_skipped_kind"] += 1
                    continue
                hashes, toks, parent = ev.block_hashes, ev.token_ids, ev.parent_block_hash
                n = len(hashes)
                if (
                    bs is None
                    or ev.block_size != bs
                    or (ev.medium is not None and ev.medium != MEDIUM_GPU)
                    or ev.lora_name is not None
                    or ev.lora_id is not None
                    or not n
                    or type(hashes[0]) is not int
                    or len(toks) != n * bs
                    or (parent is not None and type(parent) is not int)
                ):
                    _store_event(ix, endpoint_id, ev)
                    n_ev_stored += 1
                    bs = ix._block_size.get(ep.model)  # the first event may have set it
                    continue
                if parent is None:
                    h = root
                else:
                    p = hget(parent)
                    if p is None:
                        n_unresolved += 1
                        n_ev_stored += 1
                        continue
                    h = p
                if n == 1:
                    h = xxh(enc(toks) if type(toks) is list else enc(list(toks)), h)
                    hmap[hashes[0]] = h
                    gpu[h] = gpop(h, 0) | bit
                else:
                    for vh, key in zip(hashes, chain_keys(toks, bs, h, n), strict=True):
                        hmap[vh] = key
                        gpu[key] = gpop(key, 0) | bit
                n_stored += n
                n_ev_stored += 1
            elif t is BlockRemoved:
                hashes = ev.block_hashes
                if (
                    ix._cpu
                    or ix._sto
                    or (ev.medium is not None and ev.medium != MEDIUM_GPU)
                    or (hashes and type(hashes[0]) is not int)
                ):
                    ix.remove(endpoint_id, _folded(hashes), ev.medium)
                    n_ev_removed += 1
                    continue
                for vh in hashes:
                    key = hmap.pop(vh, -1)
                    if key == -1:
                        n_unknown += 1
                        continue
                    m = gpu.get(key, 0) & clear
                    if m:
                        gpu[key] = m
                    else:
                        gpu.pop(key, None)
                    n_removed += 1
                n_ev_removed += 1
            elif t is AllBlocksCleared:
                ix.clear_endpoint(endpoint_id)
                hmap, hget = ep.hmap, ep.hmap.get  # clear_endpoint replaces the map
                counts["AllBlocksCleared"] += 1
        except _BAD_EVENT:
            on_bad()
    _finish(ix, ep, counts, n_stored, n_removed, n_ev_stored, n_ev_removed, n_unresolved, n_unknown)


def _finish(
    ix: KVIndex,
    ep: Any,
    counts: Counter[str],
    n_stored: int,
    n_removed: int,
    n_ev_stored: int,
    n_ev_removed: int,
    n_unresolved: int,
    n_unknown: int,
) -> None:
    """Fold a payload's tallies into the counters, then enforce the bounds (once per payload)."""
    c = ix.counters
    c.num_blocks_stored += n_stored
    c.num_blocks_removed += n_removed
    c.num_unresolved_parent += n_unresolved
    c.num_unresolved_hash += n_unknown
    if n_ev_stored:
        counts["BlockStored"] += n_ev_stored
    if n_ev_removed:
        counts["BlockRemoved"] += n_ev_removed
    if len(ix._gpu) > ix.capacity:
        ix._evict_keys()
    if len(ep.hmap) > ix.map_capacity:
        ix._evict_map(ep)


def _store_event(ix: KVIndex, endpoint_id: str, ev: BlockStored) -> None:
    lora = (
        ev.lora_name if ev.lora_name is not None else (None if ev.lora_id is None else f"#lora{ev.lora_id}")
    )
    parent = None if ev.parent_block_hash is None else fold_hash(ev.parent_block_hash)
    ix.store(endpoint_id, _folded(ev.block_hashes), parent, ev.token_ids, ev.block_size, ev.medium, lora)


def _folded(hashes: list[Any]) -> list[int]:
    """vLLM's default int hashes pass through untouched; raw-bytes digests are folded to uint64.

    One publisher uses one form, so the first element decides (a mixed list can only mis-key itself)."""
    if hashes and type(hashes[0]) is not int:
        return [fold_hash(x) for x in hashes]
    return hashes
