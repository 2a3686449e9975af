"""Longest consecutive prefix match over tier bitmasks, weighted per tier (the scorer's hot path).

Walks the prompt's block keys lazily and keeps ``alive`` = candidates that hold every block so far;
an endpoint leaves ``alive`` at its first miss and the walk stops when nobody is left, so the cost is
proportional to the longest match, not the prompt. Per-endpoint work happens only at the (at most
#candidates) moments someone drops out, plus for runs of blocks whose best tier is not the top one
(grouped into segments of identical masks), so a 32k-token prompt over 64 endpoints costs ~2k dict
lookups and a few big-int ANDs per block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lanterna.kvindex.hashing import array_header, encode, hash_block, iter_block_chunks, iter_block_keys


@dataclass(frozen=True, slots=True)
class TierWeights:
    """Credit per matched block by the best tier holding it (llm-d-style defaults)."""

    gpu: float = 1.0
    cpu: float = 0.8
    storage: float = 0.4


def _bits(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def _expand(storage_mask: int, mounts: dict[int, int]) -> int:
    eps = 0
    while storage_mask:
        low = storage_mask & -storage_mask
        eps |= mounts.get(low, 0)
        storage_mask ^= low
    return eps


def match_blocks(
    token_ids: Sequence[int],
    block_size: int,
    root: int,
    cand: int,
    gpu: dict[int, int],
    cpu: dict[int, int],
    sto: dict[int, int],
    mounts: dict[int, int],
    w: TierWeights,
) -> dict[int, float]:
    """Return slot -> weighted matched blocks for slots in ``cand`` with at least one matched block."""
    alive = cand
    ended: list[tuple[int, int]] = []  # (mask of slots that dropped out, their run length)
    segments: list[list[int]] = []  # [cpu_best_mask, storage_best_mask, count]
    if not cpu and not sto:
        i = _walk_gpu_only(token_ids, block_size, root, cand, gpu, ended)
        alive = 0
    else:
        i = 0
        gget, cget, sget = gpu.get, cpu.get, sto.get
        for key in iter_block_keys(token_ids, block_size, root):
            g = gget(key, 0) & alive
            c = cget(key, 0) & alive
            s = sget(key, 0)
            s = _expand(s, mounts) & alive if s else 0
            present = g | c | s
            # best tier per endpoint, by weight order (GPU > CPU > storage with the defaults)
            cb, sb = _best_non_gpu(g, c, s, w)
            if cb or sb:
                if segments and segments[-1][0] == cb and segments[-1][1] == sb:
                    segments[-1][2] += 1
                else:
                    segments.append([cb, sb, 1])
            dropped = alive & ~present
            if dropped:
                ended.append((dropped, i))
                alive = present
                if not alive:
                    break
            i += 1
    if alive:
        ended.append((alive, i))
    out: dict[int, float] = {}
    for mask, length in ended:
        if length:
            for slot in _bits(mask):
                out[slot] = w.gpu * length
    for cb, sb, count in segments:
        for slot in _bits(cb):
            out[slot] += (w.cpu - w.gpu) * count
        for slot in _bits(sb):
            out[slot] += (w.storage - w.gpu) * count
    return out


def _walk_gpu_only(
    token_ids: Sequence[int], block_size: int, root: int, alive: int, gpu: dict[int, int],
    ended: list[tuple[int, int]],
) -> int:
    """The common case (no offload tiers indexed): per block one hash, one lookup and one AND.

    Hashing is fused into the walk (no key list), so a miss stops the hashing too; a prompt with a
    ``Canon`` (tokenizer thread) is sliced, a list is encoded block by block."""
    gget = gpu.get
    xxh = hash_block
    h = root
    i = 0
    bs = block_size
    n = len(token_ids) // bs
    c = getattr(token_ids, "canon", None)
    if c is not None or type(token_ids) is list or type(token_ids) is tuple:
        if c is not None:
            hdr, body = array_header(bs), c.body
            offs = c.offsets(bs, 0, min(n, 64))  # a miss early costs microseconds: the rest later
            lim = len(offs) - 1
            enc = None
        else:
            enc, lim = encode, n
        while i < n:
            if i == lim:  # only reached with a Canon, once: the offsets of the remaining blocks
                offs = [0] * i + c.offsets(bs, i, n)  # type: ignore[union-attr]
                lim = n
            if enc is None:
                h = xxh(hdr + body[offs[i] : offs[i + 1]], h)
            else:
                h = xxh(enc(token_ids[i * bs : i * bs + bs]), h)
            m = gget(h)
            if m is None:
                ended.append((alive, i))
                return i
            na = alive & m
            if na != alive:
                ended.append((alive ^ na, i))
                if not na:
                    return i
                alive = na
            i += 1
        ended.append((alive, i))
        return i
    for blobs in iter_block_chunks(token_ids, block_size):
        for blob in blobs:
            h = xxh(blob, h)
            m = gget(h)
            if m is None:
                ended.append((alive, i))
                return i
            na = alive & m
            if na != alive:
                ended.append((alive ^ na, i))
                if not na:
                    return i
                alive = na
            i += 1
    ended.append((alive, i))
    return i


def _best_non_gpu(g: int, c: int, s: int, w: TierWeights) -> tuple[int, int]:
    """Masks of endpoints whose best tier for this block is CPU, resp. storage."""
    order = sorted(((w.gpu, 0, g), (w.cpu, 1, c), (w.storage, 2, s)), key=lambda t: -t[0])
    taken = 0
    best = [0, 0, 0]
    for _, tier, m in order:
        best[tier] = m & ~taken
        taken |= m
    return best[1], best[2]
