"""Block file I/O on real files: round trip, scattered rows, concurrent writers, misses, atomicity."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from lanterna.offload.file_tier import FileTier
from lanterna.offload.layout import StorageLayout, parse_block_file

LAYERS, BLOCKS, ROW = 3, 64, 1536  # bytes per layer row: a block file is 4.5 KiB


def pool(seed: int | None) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (BLOCKS, ROW), dtype=np.uint8) if seed is not None
            else np.zeros((BLOCKS, ROW), np.uint8) for _ in range(LAYERS)]


def rows(layers: list[np.ndarray], i: int) -> list[memoryview]:
    return [memoryview(layer[i]) for layer in layers]


def tier(root: Path, threads: int = 4) -> FileTier:
    return FileTier(StorageLayout(str(root), "m", 16, "uint8", tp_size=1), threads)


def test_round_trip_scattered_blocks(tmp_path: Path) -> None:
    src, dst = pool(1), pool(None)
    ids = [3, 60, 7, 0, 33, 12, 63]
    hashes = [i.to_bytes(32, "big") for i in ids]
    t = tier(tmp_path)
    assert t.store(hashes, [rows(src, i) for i in ids]) == [True] * len(ids)
    assert t.store(hashes[:2], [rows(src, i) for i in ids[:2]]) == [False, False]  # already there: dedup
    back = [40, 41, 42, 43, 44, 45, 46]  # into other pool slots
    assert t.load(hashes, [rows(dst, j) for j in back]) == [True] * len(ids)
    for i, j in zip(ids, back, strict=True):
        for layer in range(LAYERS):
            assert np.array_equal(src[layer][i], dst[layer][j])
    files = list(tmp_path.rglob("*.bin"))
    assert len(files) == len(ids) and all(f.stat().st_size == LAYERS * ROW for f in files)
    assert {parse_block_file(f.name, f.parent.name).block_hash for f in files} == set(hashes)  # type: ignore[union-attr]
    t.close()


def test_miss_and_wrong_size_are_misses(tmp_path: Path) -> None:
    t = tier(tmp_path)
    h = (1).to_bytes(32, "big")
    dst = pool(None)
    assert t.load([h], [rows(dst, 0)]) == [False]
    p = Path(t.layout.block_path(h))
    p.parent.mkdir(parents=True)
    p.write_bytes(b"short")
    assert t.load([h], [rows(dst, 0)]) == [False] and t.contains([h]) == [True]
    t.close()


def test_concurrent_writers_of_the_same_blocks(tmp_path: Path) -> None:
    """Four tiers (pods) store overlapping blocks at once: every file ends complete, no temp is left."""
    src = pool(2)
    hashes = [i.to_bytes(32, "big") for i in range(BLOCKS)]
    tiers = [tier(tmp_path, threads=3) for _ in range(4)]
    barrier = threading.Barrier(len(tiers))
    written: list[int] = []

    def pod(t: FileTier) -> None:
        barrier.wait()
        written.append(sum(t.store(hashes, [rows(src, i) for i in range(BLOCKS)])))

    threads = [threading.Thread(target=pod, args=(t,)) for t in tiers]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(written) >= BLOCKS  # each block written at least once (races may rewrite, atomically)
    assert not [n for _, _, names in os.walk(tmp_path) for n in names if n.endswith(".tmp")]
    dst = pool(None)
    assert tiers[0].load(hashes, [rows(dst, i) for i in range(BLOCKS)]) == [True] * BLOCKS
    assert all(np.array_equal(a, b) for a, b in zip(src, dst, strict=True))
    for t in tiers:
        t.close()
