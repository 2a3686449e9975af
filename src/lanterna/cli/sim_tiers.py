"""KV offload tiers for ``lanterna sim`` from vLLM's own flags, so a vLLM command line works unchanged.

vLLM sizes its CPU tier in bytes (``OffloadingConnector`` ``cpu_bytes_to_use``, or the shortcut
``--kv-offloading-backend native --kv-offloading-size <GiB>``, which vLLM rewrites into the same
connector config) and adds a filesystem tier through ``TieringOffloadingSpec`` ``secondary_tiers``. The
engine counts tiers in GPU-sized blocks, so bytes become ``bytes // (kv bytes per token x TP x block
size)``: vLLM's ``cpu_bytes_to_use`` is the total over all TP ranks and our profile's
``kv_bytes_per_token`` is per device. vLLM's filesystem tier has no size (the directory is the index and
an external evictor trims it), so the sim bounds it: ``--num-storage-blocks``, else 10x the CPU tier.
With a ``root_dir`` the tier is that directory (``sim.shared_dir``): every sim process pointed at it
shares the blocks, as vLLM pods sharing a mount do; without one it is a private in-memory tier.
Our explicit ``--num-cpu-blocks`` / ``--num-storage-blocks`` override whatever vLLM's flags implied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OFFLOADING_CONNECTORS = ("OffloadingConnector", "SimpleCPUOffloadConnector")
TIERING_SPEC = "TieringOffloadingSpec"
FS_TIER_PER_CPU_BLOCK = 10  # default fs-tier size relative to the CPU tier
MAX_DEFAULT_FS_BLOCKS = 1 << 20  # bounded memory: the tier is an LRU set of hashes
GIB = 1 << 30


class TierFlagError(ValueError):
    """A tier flag the sim cannot honour; the message is one line for stderr."""


@dataclass(frozen=True, slots=True)
class TierSettings:
    num_cpu_blocks: int = 0
    num_storage_blocks: int = 0
    cpu_bandwidth_bps: float = 25e9
    storage_bandwidth_bps: float = 2e9
    cpu_bytes: int | None = None  # what vLLM was asked for, for cache_config_info's kv_offloading_size
    storage_root: str | None = None  # the fs tier's root_dir: a directory shared with other replicas


@dataclass(frozen=True, slots=True)
class TierFlags:
    """The raw flag values (None = not given)."""

    kv_transfer_config: dict[str, Any] | None = None
    kv_offloading_backend: str | None = None
    kv_offloading_size_gib: float | None = None
    num_cpu_blocks: int | None = None
    num_storage_blocks: int | None = None
    cpu_bandwidth_gbps: float = 25.0
    storage_bandwidth_gbps: float = 2.0


def _offloading_configs(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """``kv_connector_extra_config`` of every offloading connector (MultiConnector nests them)."""
    name = cfg.get("kv_connector")
    extra = cfg.get("kv_connector_extra_config") or {}
    if not isinstance(extra, dict):
        raise TierFlagError("--kv-transfer-config kv_connector_extra_config must be a JSON object")
    if name == "MultiConnector":
        subs = extra.get("connectors") or []
        if not isinstance(subs, list) or not all(isinstance(c, dict) for c in subs):
            raise TierFlagError("--kv-transfer-config MultiConnector connectors must be a list of objects")
        return [e for c in subs for e in _offloading_configs(c)]
    return [extra] if name in OFFLOADING_CONNECTORS else []


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise TierFlagError(f"--kv-transfer-config {name} must be a positive number, got {value!r}")
    return int(value)


def _from_connector(extra: dict[str, Any], block_size: int,
                    bytes_per_block: int) -> tuple[int, bool, int | None, str | None]:
    """(CPU blocks, has an fs tier, CPU bytes, fs root_dir) from one OffloadingConnector's extra config."""
    cpu_bytes = None
    if "cpu_bytes_to_use" in extra:
        cpu_bytes = _positive_int("cpu_bytes_to_use", extra["cpu_bytes_to_use"])
        cpu_blocks = cpu_bytes // bytes_per_block
    elif "num_cpu_blocks" in extra:  # older vLLM: counted in offload blocks of `block_size` tokens
        offload_bs = _positive_int("block_size", extra.get("block_size", block_size))
        cpu_blocks = _positive_int("num_cpu_blocks", extra["num_cpu_blocks"]) * max(1, offload_bs // block_size)
    else:
        raise TierFlagError("--kv-transfer-config OffloadingConnector needs kv_connector_extra_config "
                            "cpu_bytes_to_use (or num_cpu_blocks)")
    has_fs, root = False, None
    if extra.get("spec_name", "CPUOffloadingSpec") == TIERING_SPEC:
        tiers = extra.get("secondary_tiers") or []
        if not isinstance(tiers, list) or not all(isinstance(t, dict) for t in tiers):
            raise TierFlagError("--kv-transfer-config secondary_tiers must be a list of objects")
        for t in tiers:
            if t.get("type") != "fs":
                raise TierFlagError(f"--kv-transfer-config secondary tier type {t.get('type')!r} is not simulated; "
                                    "the sim models 'fs' (shared storage)")
            has_fs = True
            if t.get("root_dir") is not None:
                if not isinstance(t["root_dir"], str) or not t["root_dir"]:
                    raise TierFlagError("--kv-transfer-config fs tier root_dir must be a non-empty string")
                root = t["root_dir"]
    return cpu_blocks, has_fs, cpu_bytes, root


def resolve_tiers(flags: TierFlags, *, block_size: int, kv_bytes_per_token: int, tp: int = 1) -> TierSettings:
    """Turn vLLM's offloading flags plus ours into engine tier sizes (GPU blocks) and bandwidths."""
    bytes_per_block = max(1, kv_bytes_per_token * tp * block_size)
    cpu_blocks, has_fs, cpu_bytes, root = 0, False, None, None
    for extra in _offloading_configs(flags.kv_transfer_config or {}):
        n, fs, b, r = _from_connector(extra, block_size, bytes_per_block)
        cpu_blocks, has_fs, cpu_bytes = cpu_blocks + n, has_fs or fs, b if b is not None else cpu_bytes
        root = r or root
    if flags.kv_offloading_size_gib is not None:
        backend = flags.kv_offloading_backend or "native"
        if backend != "native":
            raise TierFlagError(f"--kv-offloading-backend {backend} is not simulated; use native")
        if flags.kv_offloading_size_gib <= 0:
            raise TierFlagError(f"--kv-offloading-size must be positive, got {flags.kv_offloading_size_gib}")
        cpu_bytes = int(flags.kv_offloading_size_gib * GIB)
        cpu_blocks = cpu_bytes // bytes_per_block  # vLLM rewrites the connector config the same way
    if flags.num_cpu_blocks is not None:
        cpu_blocks = flags.num_cpu_blocks
    storage_blocks = min(cpu_blocks * FS_TIER_PER_CPU_BLOCK, MAX_DEFAULT_FS_BLOCKS) if has_fs else 0
    if flags.num_storage_blocks is not None:
        storage_blocks = flags.num_storage_blocks
    for name, value in (("--num-cpu-blocks", cpu_blocks), ("--num-storage-blocks", storage_blocks)):
        if value < 0:
            raise TierFlagError(f"{name} must be >= 0, got {value}")
    for name, gbps in (("--cpu-bandwidth-gbps", flags.cpu_bandwidth_gbps),
                       ("--storage-bandwidth-gbps", flags.storage_bandwidth_gbps)):
        if gbps <= 0:
            raise TierFlagError(f"{name} must be positive, got {gbps}")
    if (cpu_bytes is not None or has_fs) and cpu_blocks == 0 and storage_blocks == 0:
        raise TierFlagError(f"the KV offloading size is smaller than one block ({bytes_per_block} bytes)")
    return TierSettings(cpu_blocks, storage_blocks, flags.cpu_bandwidth_gbps * 1e9,
                        flags.storage_bandwidth_gbps * 1e9, cpu_bytes, root if storage_blocks else None)
