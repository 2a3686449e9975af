"""The shared-directory KV tier: two tiers over one directory behave as one store (real files)."""

from __future__ import annotations

import os
from pathlib import Path

from lanterna.sim.shared_dir import DirectoryTier, namespace_for

from .helpers import make_engine, req, run


def test_a_block_one_tier_writes_is_visible_to_another(tmp_path: Path) -> None:
    a, b = DirectoryTier(tmp_path, "m", 8), DirectoryTier(tmp_path, "m", 8)
    h = 0xFEDC_BA98_7654_3210
    assert h not in b
    assert a.insert(h) is None
    assert h in b and len(a) == 1 and len(b) == 0
    assert Path(a.path(h)).name == "fedcba9876543210" and Path(a.path(h)).parent.name == "fe"
    assert not [p for p in tmp_path.rglob("*.tmp")]  # written to a temp name, then renamed
    assert h not in DirectoryTier(tmp_path, "other-namespace", 8)


def test_capacity_evicts_our_oldest_file_and_reports_it(tmp_path: Path) -> None:
    t = DirectoryTier(tmp_path, "m", 2)
    assert t.insert(1) is None and t.insert(2) is None
    t.hit(1)  # 2 is now the least recently read
    assert t.insert(3) == 2
    assert 2 not in t and 1 in t and 3 in t


def test_a_block_another_process_read_gets_a_second_chance(tmp_path: Path) -> None:
    a, b = DirectoryTier(tmp_path, "m", 2), DirectoryTier(tmp_path, "m", 2)
    a.insert(1)
    a.insert(2)
    b.hit(1)  # another replica loaded block 1 after a wrote it
    assert a.insert(3) == 2  # 1 was read more recently than a knew: 2 goes instead
    assert 1 in b and 2 not in b


def test_a_file_deleted_elsewhere_is_not_reported_twice(tmp_path: Path) -> None:
    a = DirectoryTier(tmp_path, "m", 1)
    a.insert(1)
    os.unlink(a.path(1))  # an external evictor
    assert 1 not in a
    assert a.insert(2) is None
    a.hit(7)  # a load racing a delete: no error


def test_engines_over_one_directory_share_blocks(tmp_path: Path) -> None:
    ns = namespace_for("org/model", 4)
    a = make_engine(num_gpu_blocks=5, storage=DirectoryTier(tmp_path, ns, 64))
    a.add_request(req("a", list(range(0, 17)), max_tokens=1))
    run(a)
    a.add_request(req("evict", list(range(500, 517)), max_tokens=1))
    run(a)
    b = make_engine(num_gpu_blocks=5, storage=DirectoryTier(tmp_path, ns, 64))
    b.add_request(req("b", list(range(0, 17)), max_tokens=1))
    assert run(b).cached["b"] == 16
    assert len(list((tmp_path / ns).rglob("*"))) > 4
