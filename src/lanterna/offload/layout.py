"""The shared-filesystem block layout: which files are blocks, and where a block lives.

vLLM's filesystem tier (``TieringOffloadingSpec`` ``type: fs``) writes one file per offloaded block at
``<root>/<model>_<digest>_r<rank>/<hhh>/<hh>_g<group>/<hash hex>.bin`` (``digest`` = 12 hex chars of a
sha256 over model, parallelism, block size and dtype; ``hhh``/``hh`` = the first 5 hex chars of the hash,
to bound directory fan-out). A store writes ``<final>_<random>.tmp`` and ``os.replace``s it, so a
``.bin`` name only ever names a complete file. Our transfer engine writes the same shape, so one evictor
serves both. Pure: names in, names out; no I/O.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from lanterna.protocol.kv_events import fold_hash

BLOCK_SUFFIX = ".bin"
TEMP_SUFFIX = ".tmp"
_HEX = frozenset("0123456789abcdef")
_DIGEST_LEN = 12


@dataclass(frozen=True, slots=True)
class BlockName:
    """A block file's identity, recovered from its path alone."""

    block_hash: bytes
    group_idx: int

    @property
    def event_hash(self) -> int:
        """The hash as vLLM's KV events carry it by default (last 8 bytes, big-endian)."""
        return fold_hash(self.block_hash)


def parse_block_file(name: str, parent: str = "") -> BlockName | None:
    """``<hex>.bin`` -> BlockName; ``None`` for temp files, ``config.json`` and anything else.

    ``parent`` is the containing directory's name (``<hh>_g<group>``); the group defaults to 0 when it is
    not in that form, so files from a flatter layout still parse.
    """
    if not name.endswith(BLOCK_SUFFIX):
        return None
    hex_part = name[: -len(BLOCK_SUFFIX)]
    if not hex_part or len(hex_part) % 2 or not _HEX.issuperset(hex_part):
        return None
    group = 0
    _, sep, g = parent.rpartition("_g")
    if sep and g.isdigit():
        group = int(g)
    return BlockName(bytes.fromhex(hex_part), group)


def is_temp_file(name: str) -> bool:
    return name.endswith(TEMP_SUFFIX)


@dataclass(frozen=True, slots=True)
class StorageLayout:
    """Where one deployment's blocks live: pods with equal fields share files (and must share hashes)."""

    root_dir: str
    model_name: str
    block_size: int  # tokens per offloaded block
    dtype: str
    tp_size: int = 1
    pp_size: int = 1
    rank: int = 0

    @property
    def base_path(self) -> str:
        fields = {"model_name": self.model_name, "tokens_per_block": self.block_size, "dtype": self.dtype,
                  "tp_size": self.tp_size, "pp_size": self.pp_size}
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:_DIGEST_LEN]
        return os.path.join(self.root_dir, f"{self.model_name.replace('/', '_')}_{digest}")

    def block_path(self, block_hash: bytes, group_idx: int = 0) -> str:
        h = block_hash.hex()
        return f"{self.base_path}_r{self.rank}/{h[:3]}/{h[3:5]}_g{group_idx}/{h}{BLOCK_SUFFIX}"
