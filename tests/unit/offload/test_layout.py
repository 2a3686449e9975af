"""Block file names: which files are blocks, their hash and group, and where our engine puts them."""

from __future__ import annotations

import pytest

from lanterna.offload.layout import BlockName, StorageLayout, is_temp_file, parse_block_file

H = bytes(range(32))


@pytest.mark.parametrize(("name", "parent", "expected"), [
    (H.hex() + ".bin", "010_g0", BlockName(H, 0)),
    (H.hex() + ".bin", "010_g3", BlockName(H, 3)),
    ("abcd.bin", "flat", BlockName(b"\xab\xcd", 0)),
    (H.hex() + ".bin_123.tmp", "010_g0", None),
    ("config.json", "", None),
    ("xyz.bin", "", None),
    ("abc.bin", "", None),
    (".bin", "", None),
], ids=["vllm", "group", "flat", "temp", "config", "not-hex", "odd-hex", "empty"])
def test_parse_block_file(name: str, parent: str, expected: BlockName | None) -> None:
    assert parse_block_file(name, parent) == expected


def test_event_hash_is_vllm_int_form() -> None:
    assert BlockName(H, 0).event_hash == int.from_bytes(H[-8:], "big")


def test_layout_path_parses_back_and_separates_deployments() -> None:
    lay = StorageLayout("/kv", "org/model", 256, "bfloat16", tp_size=2, rank=1)
    p = lay.block_path(H, 2)
    assert p.startswith("/kv/org_model_") and "_r1/000/10_g2/" in p
    parts = p.split("/")
    assert parse_block_file(parts[-1], parts[-2]) == BlockName(H, 2)
    other = StorageLayout("/kv", "org/model", 256, "bfloat16", tp_size=4)
    assert other.base_path != lay.base_path
    assert is_temp_file(p + "_9.tmp") and not is_temp_file(p)
