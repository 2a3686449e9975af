"""The evictor on real files (one process): watermarks, oldest-first, rounds, dry-run, safety, recency."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from lanterna.offload.evict_policy import OldestCandidates, Watermarks
from lanterna.offload.evictor import Evictor, EvictorConfig, PassResult, _Scan, detect_recency
from lanterna.offload.layout import BlockName, StorageLayout

SIZE = 1000


def make_blocks(root: Path, n: int, *, group: int = 0) -> list[Path]:
    """``n`` block files in vLLM's layout; block i has atime i s and mtime (n - i) s (opposite orders)."""
    lay = StorageLayout(str(root), "m", 256, "float16")
    out = []
    for i in range(n):
        p = Path(lay.block_path(i.to_bytes(32, "big"), group))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"k" * SIZE)
        os.utime(p, ns=(10**9 * (i + 1), 10**9 * (n - i)))
        out.append(p)
    return out


def evictor(root: Path, **kw: object) -> Evictor:
    cfg = EvictorConfig(str(root), Watermarks(0.85, 0.70), capacity_bytes=100 * SIZE, recency="atime")
    return Evictor(dataclasses.replace(cfg, **kw))  # type: ignore[arg-type]


def test_deletes_oldest_down_to_low(tmp_path: Path) -> None:
    files = make_blocks(tmp_path, 100)
    res = evictor(tmp_path).run_once()
    assert (res.used_bytes, res.need_bytes, res.files_deleted, res.bytes_deleted) == (100 * SIZE, 30 * SIZE, 30, 30 * SIZE)
    assert [p.exists() for p in files] == [False] * 30 + [True] * 70
    assert evictor(tmp_path).run_once().files_deleted == 0  # 70% < high: hysteresis, nothing more


def test_below_high_touches_nothing(tmp_path: Path) -> None:
    files = make_blocks(tmp_path, 84)
    assert evictor(tmp_path).run_once().files_deleted == 0
    assert all(p.exists() for p in files)


def test_statvfs_mode_below_high_does_not_scan(tmp_path: Path) -> None:
    make_blocks(tmp_path, 5)
    res = evictor(tmp_path, capacity_bytes=None, watermarks=Watermarks(0.9999, 0.5)).run_once()
    assert res.rounds == 0 and res.capacity_bytes > 0 and res.files_deleted == 0


def test_dry_run_deletes_nothing(tmp_path: Path) -> None:
    files = make_blocks(tmp_path, 100)
    res = evictor(tmp_path, dry_run=True).run_once()
    assert res.files_deleted == 30 and res.bytes_deleted == 30 * SIZE
    assert all(p.exists() for p in files)


def test_small_k_needs_rounds_but_same_victims(tmp_path: Path) -> None:
    files = make_blocks(tmp_path, 100)
    res = evictor(tmp_path, max_candidates=7).run_once()
    assert res.rounds == 5 and res.max_retained == 7 and res.files_deleted == 30
    assert [p.exists() for p in files] == [False] * 30 + [True] * 70


def test_mtime_recency(tmp_path: Path) -> None:
    files = make_blocks(tmp_path, 100)
    evictor(tmp_path, recency="mtime").run_once()
    assert [p.exists() for p in files] == [True] * 70 + [False] * 30


def test_temp_and_foreign_files_are_counted_never_deleted(tmp_path: Path) -> None:
    files = make_blocks(tmp_path, 80)
    tmp = Path(str(files[0]) + "_42.tmp")
    tmp.write_bytes(b"t" * (10 * SIZE))  # in-flight write: 90% used
    other = tmp_path / "config.json"
    other.write_text("")  # counted (0 bytes), never a victim
    os.utime(tmp, ns=(0, 0))
    os.utime(other, ns=(0, 0))
    res = evictor(tmp_path).run_once()
    assert res.temp_files_seen == 1 and res.files_deleted == 20
    assert tmp.exists() and other.exists()


class _ReadAfterScan(Evictor):
    """A reader touches the oldest file between the scan and the deletes."""

    def __init__(self, cfg: EvictorConfig, victim: Path) -> None:
        super().__init__(cfg)
        self.victim = victim

    def _scan(self, heap: OldestCandidates, res: PassResult) -> _Scan:
        s = super()._scan(heap, res)
        os.utime(self.victim, ns=(10**12, 10**9))
        return s


def test_file_read_since_scan_is_spared(tmp_path: Path) -> None:
    files = make_blocks(tmp_path, 100)
    res = _ReadAfterScan(evictor(tmp_path).config, files[0]).run_once()
    assert files[0].exists() and res.files_skipped >= 1
    assert res.files_deleted == 30 and not files[30].exists()  # the next oldest went instead


def test_on_removed_reports_hash_and_group(tmp_path: Path) -> None:
    make_blocks(tmp_path, 100, group=2)
    seen: list[BlockName] = []
    Evictor(evictor(tmp_path).config, on_removed=seen.extend).run_once()
    assert sorted(seen, key=lambda b: b.block_hash) == [BlockName(i.to_bytes(32, "big"), 2) for i in range(30)]


@pytest.mark.parametrize(("opts", "expected"), [
    ("rw,noatime", "mtime"), ("rw,relatime", "atime"), ("rw,strictatime", "atime"),
], ids=["noatime", "relatime", "strictatime"])
def test_detect_recency(tmp_path: Path, opts: str, expected: str) -> None:
    mi = tmp_path / "mountinfo"
    mi.write_text(f"1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
                  f"2 1 8:2 / {tmp_path} {opts} shared:2 - xfs /dev/sdb rw\n")
    assert detect_recency(str(tmp_path / "sub"), str(mi)) == expected
    assert detect_recency("/elsewhere", str(mi)) == "atime"
