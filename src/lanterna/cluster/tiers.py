"""KV offload tiers for the virtual cluster: per-replica CPU tiers and one storage tier all replicas share.

Sizes are given as vLLM gives them (GiB of KV, total over a replica's TP ranks, as ``cpu_bytes_to_use``
and ``--kv-offloading-size``) or directly in GPU-sized blocks; bandwidths in GB/s. With ``shared_storage``
every engine gets the *same* in-memory ``OffloadTier``, so a block one replica offloaded is a hit for all,
and the index is told they mount one storage (``STORAGE_MOUNT``) so the precise scorer credits it.
"""

from __future__ import annotations

from typing import Any

from lanterna.bench.config import ClusterTarget, TierTarget
from lanterna.protocol.kv_events import MEDIUM_SHARED_STORAGE
from lanterna.sim.tiers import OffloadTier

STORAGE_MOUNT = "virtual-shared-storage"
GIB = 1 << 30


def _blocks(gib: float | None, blocks: int | None, c: ClusterTarget) -> int:
    if blocks is not None:
        return blocks
    if not gib:
        return 0
    from lanterna.sim import get_profile

    p = get_profile(c.profile)
    return int(gib * GIB) // (p.kv_bytes_per_token * p.tp * c.block_size)


def engine_tier_kwargs(c: ClusterTarget) -> dict[str, Any]:
    """``EngineConfig`` fields for ``c.tiers`` (a private storage tier only when storage is not shared)."""
    t = c.tiers
    if t is None:
        return {}
    out: dict[str, Any] = {"num_cpu_blocks": _blocks(t.cpu_gib, t.cpu_blocks, c),
                           "cpu_bandwidth_bps": t.cpu_bandwidth_gbps * 1e9,
                           "storage_bandwidth_bps": t.storage_bandwidth_gbps * 1e9}
    if not t.shared_storage:
        out["num_storage_blocks"] = _blocks(t.storage_gib, t.storage_blocks, c)
    return out


def make_shared_storage(c: ClusterTarget) -> OffloadTier | None:
    """The one storage tier every engine of the cluster reads and writes, or None."""
    t: TierTarget | None = c.tiers
    if t is None or not t.shared_storage:
        return None
    n = _blocks(t.storage_gib, t.storage_blocks, c)
    return OffloadTier(MEDIUM_SHARED_STORAGE, n, shared=True) if n > 0 else None
