"""Virtual cluster with KV offload tiers: a CPU tier per replica and one storage tier all replicas share."""

from __future__ import annotations

from typing import Any

from lanterna.bench.config import parse_config
from lanterna.cluster.tiers import STORAGE_MOUNT
from lanterna.cluster.virtual import VirtualCluster
from lanterna.kvindex.index import TIER_CPU, TIER_STORAGE


def _cfg(tiers: dict[str, Any] | None, policy: str = "round-robin") -> Any:
    # 12 groups x 512-token prefixes (~400 blocks) over 3 replicas of 100 GPU blocks: GPU alone thrashes
    return parse_config({
        "seed": 3,
        "workload": {"type": "shared-prefix", "num_groups": 12, "prompts_per_group": 4, "system_len": 512,
                     "question_len": 32, "output_len": 8},
        "load": {"type": "concurrency", "stages": [{"concurrency": 4, "num_requests": 120}]},
        "cluster": {"replicas": 3, "policy": policy, "profile": "qwen3-32b-tp2-h100", "num_gpu_blocks": 100,
                    "tiers": tiers},
    })


def _hit_rate(vc: VirtualCluster) -> float:
    s = vc.run().stages[0].summary
    assert s.num_completed == 120
    return s.prefix_cache_hit_rate or 0.0


def test_shared_storage_serves_blocks_across_replicas_and_the_index_sees_every_tier() -> None:
    gpu_only = _hit_rate(VirtualCluster(_cfg(None)))
    cpu = _hit_rate(VirtualCluster(_cfg({"cpu_blocks": 60, "shared_storage": False})))
    vc = VirtualCluster(_cfg({"cpu_blocks": 60, "storage_blocks": 2000}))
    shared = _hit_rate(vc)
    assert gpu_only < cpu < shared
    assert vc.storage is not None and len(vc.storage) > 0
    engines: list[Any] = vc.engines
    assert all(e.kv.tiers[-1][1] is vc.storage for e in engines)  # one object, every replica
    # round-robin sends a group to every replica: some read blocks that another replica wrote
    assert sum(e.stats().num_storage_hit_tokens for e in engines) > 0
    ix = vc.index
    keys = list(ix._gpu)
    assert any(ix.holds(ep.id, k, TIER_CPU) for ep in vc.endpoints for k in keys)
    stored = [k for k in keys if ix.holds(vc.endpoints[0].id, k, TIER_STORAGE)]
    assert stored and all(ix.holds(ep.id, k, TIER_STORAGE) for ep in vc.endpoints for k in stored)
    assert ix.counters.num_unresolved_hash == 0
    assert ix._storage_slot == {STORAGE_MOUNT: 0}


def test_cpu_gib_is_converted_with_the_profile_kv_size() -> None:
    vc = VirtualCluster(_cfg({"cpu_gib": 1.0, "storage_gib": 2.0}))
    engines: list[Any] = vc.engines
    # qwen3-32b TP2: 128 KiB per token per device x 2 devices x 16 tokens = 4 MiB per block
    assert engines[0].config.num_cpu_blocks == 256 and vc.storage is not None and vc.storage.capacity == 512
