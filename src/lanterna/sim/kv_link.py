"""P/D KV transfer in the simulator: the link between a prefill and a decode replica, and the prefill side's
hold on the blocks a decoder has yet to pull. Pure: no clock, no I/O (the drivers pass ``now``).

Link: ``transfer_s = setup_s + bytes / bandwidth_bps``, bytes = prompt tokens x ``kv_bytes_per_token``. The
defaults per kind are round numbers for one GPU's share of the fabric, assumptions to override with flags:

    kind     bandwidth           setup     (what it stands for)
    nvlink   400 GB/s            50 us     same-node GPU-to-GPU (NVLink 4, one direction, after overheads)
    rdma     40 GB/s             1 ms      cross-node InfiniBand/RoCE 400 Gb/s via NIXL/UCX
    tcp      2.5 GB/s            5 ms      cross-node 25 GbE (UCX over TCP, no GPUDirect)

Leases: like vLLM's NixlConnector, the prefill replica keeps a finished ``do_remote_decode`` request's blocks
for the decoder to read, and frees them when read, after ``ttl_s`` (vLLM's abort timeout), or when it needs
the memory (the oldest lease goes first once leased blocks exceed ``capacity_blocks``). A pull of an unknown,
expired or evicted lease fails: the decoder then prefills locally (counted as a transfer failure).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

LinkKind = Literal["nvlink", "rdma", "tcp"]
LINK_DEFAULTS: dict[str, tuple[float, float]] = {  # kind -> (bandwidth bytes/s, setup s)
    "nvlink": (400e9, 50e-6),
    "rdma": (40e9, 1e-3),
    "tcp": (2.5e9, 5e-3),
}


@dataclass(frozen=True, slots=True)
class KVLink:
    kind: str
    bandwidth_bps: float
    setup_s: float

    def transfer_s(self, num_bytes: float) -> float:
        return self.setup_s + num_bytes / self.bandwidth_bps


def make_link(kind: str, bandwidth_bps: float | None = None, setup_s: float | None = None) -> KVLink:
    """The link of ``kind`` with its defaults, either overridden. Unknown kinds list the known ones."""
    if kind not in LINK_DEFAULTS:
        raise ValueError(f"unknown KV link kind {kind!r}; known: {', '.join(LINK_DEFAULTS)}")
    bw, setup = LINK_DEFAULTS[kind]
    bw = bw if bandwidth_bps is None else bandwidth_bps
    setup = setup if setup_s is None else setup_s
    if bw <= 0 or setup < 0:
        raise ValueError(f"KV link needs bandwidth > 0 and setup >= 0, got {bw} and {setup}")
    return KVLink(kind, bw, setup)


@dataclass(slots=True)
class _Lease:
    num_blocks: int
    expires: float


class KVLeases:
    """Blocks a prefill replica holds for decoders, keyed by the lease's first remote block id (bounded)."""

    def __init__(self, capacity_blocks: int, ttl_s: float = 480.0) -> None:
        self.capacity_blocks = max(1, capacity_blocks)
        self.ttl_s = ttl_s
        self._leases: OrderedDict[int, _Lease] = OrderedDict()
        self.num_blocks = 0
        self.num_evicted = 0
        self.num_expired = 0

    def grant(self, block_ids: list[int], now: float) -> None:
        if not block_ids:
            return
        self._leases[block_ids[0]] = _Lease(len(block_ids), now + self.ttl_s)
        self.num_blocks += len(block_ids)
        while self.num_blocks > self.capacity_blocks and len(self._leases) > 1:
            _, old = self._leases.popitem(last=False)
            self.num_blocks -= old.num_blocks
            self.num_evicted += 1

    def take(self, block_ids: list[int] | None, now: float) -> bool:
        """The decoder reads the blocks: True once per live lease (then freed), False otherwise."""
        if not block_ids:
            return False
        lease = self._leases.pop(block_ids[0], None)
        if lease is None:
            return False
        self.num_blocks -= lease.num_blocks
        if now > lease.expires:
            self.num_expired += 1
            return False
        return lease.num_blocks == len(block_ids)

    def __len__(self) -> int:
        return len(self._leases)
