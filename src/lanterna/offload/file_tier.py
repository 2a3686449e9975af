"""Parallel block file I/O for the shared-filesystem tier: one file per block, atomic writes.

A block is a list of buffers (one row per layer in the host pool), written with one ``os.writev`` and read
back with one ``os.readv`` straight into the pool rows: no staging copy, and the GIL is released for the
syscalls, so a thread pool scales with the filesystem. Writes go to ``<final>_<random>.tmp`` and are
``os.replace``d into place (the evictor and readers never see a partial ``.bin``); a block that already
exists is skipped (another pod stored the same content under the same hash). A file of the wrong size
is a miss, never data. ``fsync`` is optional: a lost block after a crash is a cache miss, not corruption,
because the rename happens only after the write completed.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from lanterna.offload.layout import StorageLayout

Block = Sequence[memoryview]


def _nbytes(block: Block) -> int:
    return sum(m.nbytes for m in block)


class FileTier:
    """Store/load many blocks in parallel under ``layout``; ``close`` stops the pool."""

    def __init__(self, layout: StorageLayout, threads: int = 16, *, fsync: bool = False) -> None:
        self.layout = layout
        self.threads = threads
        self.fsync = fsync
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="kv-file")
        self._rng = random.Random()

    def _store_one(self, block_hash: bytes, block: Block) -> bool:
        path = self.layout.block_path(block_hash)
        if os.path.exists(path):
            return False
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}_{self._rng.getrandbits(63)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            want, done = _nbytes(block), 0
            views = [m.cast("B") for m in block]
            while done < want:  # writev may write less than asked (large blocks, signals)
                n = os.writev(fd, views)
                done += n
                views = _advance(views, n)
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)
        return True

    def _load_one(self, block_hash: bytes, block: Block) -> bool:
        try:
            fd = os.open(self.layout.block_path(block_hash), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            want = _nbytes(block)
            if os.fstat(fd).st_size != want:
                return False
            views, done = [m.cast("B") for m in block], 0
            while done < want:
                n = os.readv(fd, views)
                if n == 0:
                    return False
                done += n
                views = _advance(views, n)
            return True
        finally:
            os.close(fd)

    def _run(self, fn: Callable[[bytes, Block], bool], hashes: Sequence[bytes], blocks: Sequence[Block]) -> list[bool]:
        if len(hashes) != len(blocks):
            raise ValueError(f"{len(hashes)} hashes vs {len(blocks)} blocks")
        step = max(1, -(-len(hashes) // self.threads))  # one task per thread, not per block

        def run_slice(lo: int) -> list[bool]:
            return [fn(h, b) for h, b in zip(hashes[lo:lo + step], blocks[lo:lo + step], strict=True)]

        return [r for part in self._pool.map(run_slice, range(0, len(hashes), step)) for r in part]

    def store(self, hashes: Sequence[bytes], blocks: Sequence[Block]) -> list[bool]:
        """Write blocks; True where a file was written, False where it already existed."""
        return self._run(self._store_one, hashes, blocks)

    def load(self, hashes: Sequence[bytes], blocks: Sequence[Block]) -> list[bool]:
        """Read blocks into the given buffers; False (buffer untouched or partial) where missing or wrong size."""
        return self._run(self._load_one, hashes, blocks)

    def contains(self, hashes: Sequence[bytes]) -> list[bool]:
        return [os.path.exists(self.layout.block_path(h)) for h in hashes]

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _advance(views: list[memoryview], n: int) -> list[memoryview]:
    """Drop ``n`` bytes from the front of a list of buffers (after a short readv/writev)."""
    out = []
    for v in views:
        if n >= v.nbytes:
            n -= v.nbytes
            continue
        out.append(v[n:])
        n = 0
    return out
