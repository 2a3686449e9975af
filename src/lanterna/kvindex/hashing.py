"""Our own block keys: a chained 64-bit xxh3 over each block's token ids, rooted per (model, LoRA).

Why our own: vLLM's block hashes are 64-bit folds of SHA-256 digests chained on the *full* parent
digest and seeded by the server's ``PYTHONHASHSEED``, so they cannot be recomputed from a prompt.
Keying the index on the token ids that ``BlockStored`` carries makes routing independent of the
server's hash algorithm and seed, and lets every gateway replica compute identical keys.

    key_0 = xxh3_64(tokens[0:B] as uint32 LE, seed=root(model, lora))
    key_i = xxh3_64(tokens[i*B:(i+1)*B],        seed=key_{i-1})

Only full blocks get keys (vLLM caches full blocks only). Measured: ~0.12 us per 16-token block.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence

import xxhash

_xxh3 = xxhash.xxh3_64_intdigest
_CHUNK_BLOCKS = 64  # prompt tokens are converted to bytes lazily, this many blocks at a time


class TokenIdOutOfRange(ValueError):
    """A token id that does not fit uint32 (garbage input); the applier counts and drops the event."""


def root_key(model: str, lora: str | None = None) -> int:
    """The chain's seed: separates models and adapters so equal tokens never share keys across them."""
    return _xxh3(f"{model}\x00{lora or ''}".encode())


def token_bytes(token_ids: Sequence[int]) -> memoryview:
    """Token ids as little-endian uint32 bytes (the hash input)."""
    try:
        return memoryview(array("I", token_ids)).cast("B")
    except (OverflowError, TypeError) as exc:
        raise TokenIdOutOfRange(str(exc)) from exc


def chain_keys(data: memoryview, block_size: int, parent: int, num_blocks: int) -> list[int]:
    """Keys of ``num_blocks`` full blocks in ``data`` (uint32 bytes), chained from ``parent``."""
    step = block_size * 4
    out: list[int] = []
    append = out.append
    h = parent
    for off in range(0, num_blocks * step, step):
        h = _xxh3(data[off : off + step], h)
        append(h)
    return out


def block_keys(token_ids: Sequence[int], block_size: int, root: int) -> list[int]:
    """All full-block keys of a token sequence."""
    n = len(token_ids) // block_size
    if n == 0:
        return []
    return chain_keys(token_bytes(token_ids[: n * block_size]), block_size, root, n)


def iter_block_keys(token_ids: Sequence[int], block_size: int, root: int) -> Iterator[int]:
    """Keys generated lazily, so a scorer that stops at the first unmatched block skips the rest.

    Converts tokens to bytes a chunk at a time: a miss at block 3 of a 128k-token prompt costs
    microseconds, not the whole conversion."""
    n = len(token_ids) // block_size
    h = root
    step = block_size * 4
    chunk_tokens = _CHUNK_BLOCKS * block_size
    for start in range(0, n * block_size, chunk_tokens):
        end = min(start + chunk_tokens, n * block_size)
        data = token_bytes(token_ids[start:end])
        for off in range(0, len(data), step):
            h = _xxh3(data[off : off + step], h)
            yield h
