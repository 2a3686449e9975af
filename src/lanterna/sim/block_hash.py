"""The simulator's own block hash: what vLLM's SHA-256 chain is to a real server.

    h_i  = xxh3_64(block i's tokens as int64, seed = h_{i-1})
    h_-1 = xxh3_64(LoRA name || cache salt, seed = f(hash_seed))       (the chain's root)

Like vLLM, the hash covers the parent, the block's token ids and its extra keys: the LoRA name and
cache salt enter through the root, so they reach every block by chaining (vLLM puts the LoRA name
in every block's extra keys and the salt in the first's; isolation is the same), and chaining via
the seed avoids building a new bytes object per block. ``hash_seed`` plays ``PYTHONHASHSEED``: it changes the
values, never the behaviour. Values span the full unsigned 64-bit range, as vLLM's folded digests
do, so consumers must not assume they fit a signed int. Deliberately *not* the KV index's key
function: the index must map server hashes through the token ids in ``BlockStored``.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import xxhash

_xxh3 = xxhash.xxh3_64_intdigest
_ROOT = b"lanterna-sim-block"

ExtraKeys = tuple[str, ...]


def seed_for(hash_seed: int) -> int:
    """The xxh3 seed for a ``hash_seed`` (any int, like PYTHONHASHSEED)."""
    return _xxh3(_ROOT + hash_seed.to_bytes(16, "little", signed=True))


def block_extra_keys(block_index: int, lora_name: str | None, cache_salt: str | None) -> ExtraKeys:
    """Extra keys of one block: LoRA on every block, cache salt only on the first (as vLLM)."""
    keys: tuple[str, ...] = (lora_name,) if lora_name else ()
    if cache_salt and block_index == 0:
        keys = (*keys, cache_salt)
    return keys


def root_hash(seed: int, lora_name: str | None, cache_salt: str | None) -> int:
    """The chain's root (the 'parent' of block 0): separates adapters and salts."""
    return _xxh3(f"{lora_name or ''}\x00{cache_salt or ''}".encode(), seed)


def hash_blocks(
    token_ids: Sequence[int],
    block_size: int,
    start_block: int,
    end_block: int,
    parent: int | None,
    seed: int,
    lora_name: str | None = None,
    cache_salt: str | None = None,
) -> list[int]:
    """Hashes of full blocks ``[start_block, end_block)`` of ``token_ids``, chained from ``parent``.

    ``parent`` is the hash of block ``start_block - 1`` (None when starting at block 0)."""
    if end_block <= start_block:
        return []
    data = memoryview(array("q", token_ids[start_block * block_size : end_block * block_size])).cast("B")
    step = block_size * 8
    h = root_hash(seed, lora_name, cache_salt) if parent is None else parent
    out: list[int] = []
    append = out.append
    for off in range(0, (end_block - start_block) * step, step):
        h = _xxh3(data[off : off + step], h)
        append(h)
    return out
