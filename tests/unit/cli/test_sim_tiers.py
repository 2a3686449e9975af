"""vLLM's offloading flags -> the sim's tier sizes (GPU blocks) and bandwidths."""

from __future__ import annotations

from typing import Any

import pytest

from lanterna.cli.sim_tiers import GIB, TierFlagError, TierFlags, resolve_tiers

BS, KVB = 16, 131072  # bytes per block = 2 MiB
PER_BLOCK = BS * KVB


def offload(extra: dict[str, Any]) -> dict[str, Any]:
    return {"kv_connector": "OffloadingConnector", "kv_role": "kv_both", "kv_connector_extra_config": extra}


def resolve(**kw: Any) -> Any:
    tp = kw.pop("tp", 1)
    return resolve_tiers(TierFlags(**kw), block_size=BS, kv_bytes_per_token=KVB, tp=tp)


def test_no_flags_no_tiers() -> None:
    t = resolve()
    assert (t.num_cpu_blocks, t.num_storage_blocks, t.cpu_bytes) == (0, 0, None)
    assert (t.cpu_bandwidth_bps, t.storage_bandwidth_bps) == (25e9, 2e9)


def test_cpu_bytes_to_use_counts_gpu_blocks_over_all_tp_ranks() -> None:
    t = resolve(kv_transfer_config=offload({"cpu_bytes_to_use": 10 * PER_BLOCK + 5}))
    assert (t.num_cpu_blocks, t.num_storage_blocks) == (10, 0)
    assert resolve(kv_transfer_config=offload({"cpu_bytes_to_use": 10 * PER_BLOCK}), tp=2).num_cpu_blocks == 5


def test_legacy_num_cpu_blocks_in_offload_block_units() -> None:
    assert resolve(kv_transfer_config=offload({"num_cpu_blocks": 7})).num_cpu_blocks == 7
    assert resolve(kv_transfer_config=offload({"num_cpu_blocks": 7, "block_size": 64})).num_cpu_blocks == 28


def test_tiering_spec_with_fs_adds_bounded_storage() -> None:
    extra = {"spec_name": "TieringOffloadingSpec", "cpu_bytes_to_use": 4 * PER_BLOCK, "block_size": 256,
             "secondary_tiers": [{"type": "fs", "root_dir": "/mnt/kv", "n_read_threads": 16}]}
    t = resolve(kv_transfer_config=offload(extra))
    assert (t.num_cpu_blocks, t.num_storage_blocks) == (4, 40)
    assert resolve(kv_transfer_config=offload(extra), num_storage_blocks=3).num_storage_blocks == 3


def test_multi_connector_finds_the_offloading_one() -> None:
    cfg = {"kv_connector": "MultiConnector", "kv_role": "kv_both", "kv_connector_extra_config": {"connectors": [
        {"kv_connector": "NixlConnector", "kv_role": "kv_both"}, offload({"cpu_bytes_to_use": 3 * PER_BLOCK})]}}
    assert resolve(kv_transfer_config=cfg).num_cpu_blocks == 3
    assert resolve(kv_transfer_config={"kv_connector": "NixlConnector", "kv_role": "kv_both"}).num_cpu_blocks == 0


def test_shortcut_and_explicit_overrides() -> None:
    t = resolve(kv_offloading_backend="native", kv_offloading_size_gib=1.0)
    assert t.num_cpu_blocks == GIB // PER_BLOCK == 512 and t.cpu_bytes == GIB
    assert resolve(kv_offloading_size_gib=0.5).num_cpu_blocks == 256  # vLLM's default backend is native
    t = resolve(kv_offloading_size_gib=1.0, num_cpu_blocks=9, num_storage_blocks=11, cpu_bandwidth_gbps=50,
                storage_bandwidth_gbps=1.5)
    assert (t.num_cpu_blocks, t.num_storage_blocks, t.cpu_bandwidth_bps, t.storage_bandwidth_bps) == (9, 11, 50e9, 1.5e9)


@pytest.mark.parametrize(("kw", "words"), [
    ({"kv_transfer_config": offload({})}, "cpu_bytes_to_use"),
    ({"kv_transfer_config": offload({"cpu_bytes_to_use": -1})}, "positive"),
    ({"kv_transfer_config": offload({"cpu_bytes_to_use": 10})}, "smaller than one block"),
    ({"kv_transfer_config": offload({"cpu_bytes_to_use": PER_BLOCK, "spec_name": "TieringOffloadingSpec",
                                     "secondary_tiers": [{"type": "obj"}]})}, "not simulated"),
    ({"kv_transfer_config": {"kv_connector": "OffloadingConnector", "kv_connector_extra_config": [1]}}, "object"),
    ({"kv_offloading_backend": "lmcache", "kv_offloading_size_gib": 1.0}, "lmcache"),
    ({"kv_offloading_size_gib": 0.0}, "positive"),
    ({"num_cpu_blocks": -1}, ">= 0"),
    ({"cpu_bandwidth_gbps": 0.0}, "positive"),
])
def test_bad_flags_say_why(kw: dict[str, Any], words: str) -> None:
    with pytest.raises(TierFlagError, match=words):
        resolve(**kw)


def test_fs_tier_root_dir_names_the_shared_directory() -> None:
    extra = {"cpu_bytes_to_use": 4 * PER_BLOCK, "spec_name": "TieringOffloadingSpec",
             "secondary_tiers": [{"type": "fs", "root_dir": "/mnt/kv"}]}
    assert resolve(kv_transfer_config=offload(extra)).storage_root == "/mnt/kv"
    assert resolve(kv_transfer_config=offload(extra), num_storage_blocks=0).storage_root is None
    with pytest.raises(TierFlagError, match="root_dir"):
        resolve(kv_transfer_config=offload({**extra, "secondary_tiers": [{"type": "fs", "root_dir": 3}]}))
