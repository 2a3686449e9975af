"""Our own block keys: a chained 64-bit xxh3 over each block's *canonical msgpack* bytes, rooted per
(model, LoRA).

Why our own: vLLM's block hashes are 64-bit folds of SHA-256 digests chained on the *full* parent
digest and seeded by the server's ``PYTHONHASHSEED``, so they cannot be recomputed from a prompt.
Keying the index on the token ids that ``BlockStored`` carries makes routing independent of the
server's hash algorithm and seed, and lets every gateway replica compute identical keys.

    key_0 = xxh3_64(msgpack(tokens[0:B]),        seed=root(model, lora))
    key_i = xxh3_64(msgpack(tokens[i*B:(i+1)*B]), seed=key_{i-1})

``msgpack(...)`` is the minimal (canonical) msgpack encoding of the block's token-id *array*, header
included: for a one-block ``BlockStored`` that is exactly the bytes of its ``token_ids`` field on the
wire, so ingest hashes the raw field without creating 16 Python ints (~2x faster per event). It
relies on publishers encoding ints minimally (msgspec, which vLLM uses, and msgpack-python do); the
general path re-encodes decoded ints, which canonicalises anything else. Token ids are not range
checked at ingest any more: a bad id only yields a key no prompt produces.

The prompt side builds the same bytes (``Canon``: one msgpack encode of the ids plus per-token byte
offsets from numpy), ideally in the tokenizer worker thread, so scoring only slices and hashes.
Only full blocks get keys (vLLM caches full blocks only).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence

import msgspec
import numpy as np
import xxhash

_xxh3 = xxhash.xxh3_64_intdigest
hash_block = _xxh3  # (data, seed) -> key of one block; ingest uses it on a one-block event's raw field
encode = msgspec.msgpack.Encoder().encode  # minimal ints and headers: the canonical form
decode_ids = msgspec.msgpack.Decoder(list[int]).decode
_CHUNK_BLOCKS = 64  # prompt bytes are sliced and hashed lazily: a miss stops the walk


class TokenIdOutOfRange(ValueError):
    """A prompt token id outside uint32 (garbage input) met by ``Canon``."""


def root_key(model: str, lora: str | None = None) -> int:
    """The chain's seed: separates models and adapters so equal tokens never share keys across them."""
    return _xxh3(f"{model}\x00{lora or ''}".encode())


def array_header(n: int) -> bytes:
    """The minimal msgpack header of an ``n``-element array (part of every block's hashed bytes)."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def chain_keys(token_ids: Sequence[int], block_size: int, parent: int, num_blocks: int) -> list[int]:
    """Keys of the first ``num_blocks`` full blocks of decoded ``token_ids``, chained from ``parent``
    (one canonical encode per block: the general ingest path and small prompts)."""
    if type(token_ids) is not list and type(token_ids) is not tuple:
        token_ids = list(token_ids)
    out: list[int] = []
    append = out.append
    h = parent
    for off in range(0, num_blocks * block_size, block_size):
        h = _xxh3(encode(token_ids[off : off + block_size]), h)
        append(h)
    return out


def chain_keys_from(token_ids: Sequence[int], block_size: int, parent: int, start: int, stop: int) -> list[int]:
    """Keys of blocks ``start..stop`` chained from ``parent`` (the key of block ``start - 1``); uses the
    prompt's ``Canon`` when it has one (slicing, no encoding)."""
    c = getattr(token_ids, "canon", None)
    if c is None:
        return chain_keys(token_ids[start * block_size : stop * block_size], block_size, parent, stop - start)
    hdr, body = array_header(block_size), c.body
    offs = c.offsets(block_size, start, stop)
    out: list[int] = []
    h = parent
    for a, b in zip(offs, offs[1:], strict=False):
        h = _xxh3(hdr + body[a:b], h)
        out.append(h)
    return out


class Canon:
    """A prompt's ids in canonical msgpack form, independent of block size: ``body`` holds the
    encoded elements and ``ends[j]`` the byte offset where token ``j`` starts (``len + 1`` entries).

    Built once per prompt (~0.5 ms at 32k tokens), so do it where the ids are made (the tokenizer
    worker thread, ``TokenIds``); block ``i`` is then ``array_header(B) + body[ends[iB]:ends[iB+B]]``."""

    __slots__ = ("body", "ends", "n")

    def __init__(self, token_ids: Sequence[int], as_list: list[int] | None = None) -> None:
        a = np.frombuffer(token_ids, dtype=np.uint32) if type(token_ids) is TokenIds or (
            type(token_ids) is array and token_ids.typecode == "I") else np.asarray(token_ids, dtype=np.int64)
        if a.size and (int(a.min()) < 0 or int(a.max()) >= 1 << 32):
            raise TokenIdOutOfRange("token id outside uint32")
        w = np.where(a < 128, 1, np.where(a < 256, 2, np.where(a < 65536, 3, 5)))
        ends = np.zeros(a.size + 1, dtype=np.int32)  # bounded memory: ~7 bytes per cached token in all
        np.cumsum(w, out=ends[1:])
        raw = encode(as_list if as_list is not None else a.tolist())
        self.body = raw[len(raw) - int(ends[-1]) :]
        self.ends = ends
        self.n = int(a.size)

    def offsets(self, block_size: int, start: int, stop: int) -> list[int]:
        """Byte offsets of block boundaries ``start..stop`` (``stop - start + 1`` entries)."""
        return self.ends[start * block_size : stop * block_size + 1 : block_size].tolist()  # type: ignore[no-any-return]


class TokenIds(array):  # type: ignore[type-arg]
    """``array('I')`` of a prompt's ids that carries its ``Canon`` (built in the tokenizer thread)."""

    canon: Canon

    @classmethod
    def of(cls, ids: Sequence[int]) -> TokenIds:
        t = cls("I", ids)
        t.canon = Canon(t, ids if type(ids) is list else None)
        return t


def canon_of(token_ids: Sequence[int]) -> Canon:
    c = getattr(token_ids, "canon", None)
    return c if c is not None else Canon(token_ids)


def block_keys(token_ids: Sequence[int], block_size: int, root: int) -> list[int]:
    """All full-block keys of a token sequence."""
    return list(iter_block_keys(token_ids, block_size, root))


def iter_block_keys(token_ids: Sequence[int], block_size: int, root: int) -> Iterator[int]:
    """Keys generated lazily, so a scorer that stops at the first unmatched block skips the rest."""
    h = root
    for blobs in iter_block_chunks(token_ids, block_size):
        for b in blobs:
            h = _xxh3(b, h)
            yield h


def iter_block_chunks(token_ids: Sequence[int], block_size: int) -> Iterator[list[bytes]]:
    """Canonical bytes of the full blocks: the first ``_CHUNK_BLOCKS`` blocks, then all the rest.

    For callers that fuse hashing with their own per-block work (the scorer's walk), so a miss early in
    a long prompt skips the remainder. A short prompt without a ``Canon`` is encoded block by block."""
    n = len(token_ids) // block_size
    if n == 0:
        return
    c = getattr(token_ids, "canon", None)
    first = min(n, _CHUNK_BLOCKS)
    if c is None:  # no Canon: encode block by block (a list's ints exist already; an array's remainder
        # is cheaper through a Canon of that slice)
        is_seq = type(token_ids) is list or type(token_ids) is tuple
        toks = token_ids[: first * block_size]
        toks = toks if is_seq else list(toks)
        yield [encode(toks[o : o + block_size]) for o in range(0, first * block_size, block_size)]
        if n == first:
            return
        rest = token_ids[first * block_size : n * block_size]
        if is_seq:
            yield [encode(rest[o : o + block_size]) for o in range(0, len(rest), block_size)]
            return
        c = Canon(rest)
        yield [array_header(block_size) + c.body[a:b] for a, b in _pairs(c.offsets(block_size, 0, n - first))]
        return
    hdr, body = array_header(block_size), c.body
    yield [hdr + body[a:b] for a, b in _pairs(c.offsets(block_size, 0, first))]
    if n > first:
        yield [hdr + body[a:b] for a, b in _pairs(c.offsets(block_size, first, n))]


def _pairs(offs: list[int]) -> zip[tuple[int, int]]:
    return zip(offs, offs[1:], strict=False)
