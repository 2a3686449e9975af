"""LoRA in the virtual cluster: adapters drawn per tenant, engines honour max_loras, the placement policy loads
fewer adapters than round-robin, and the gateway's per-adapter accounting drains to zero."""

from __future__ import annotations

from typing import Any

from lanterna.bench.config import LoraTarget, parse_config
from lanterna.bench.workloads import WorkItem
from lanterna.cluster.lora import AdapterMix
from lanterna.cluster.virtual import VirtualCluster


def _cfg(policy: str) -> Any:
    return parse_config({
        "seed": 3,
        "workload": {"type": "shared-prefix", "num_groups": 24, "prompts_per_group": 8, "system_len": 256,
                     "question_len": 64, "output_len": 32},
        "load": {"type": "poisson", "stages": [{"rate": 40, "num_requests": 192}]},
        "cluster": {"replicas": 4, "policy": policy, "profile": "llama-3.1-8b-h100", "num_gpu_blocks": 4000,
                    "lora": {"num_adapters": 12, "zipf_s": 1.0, "max_loras": 2, "load_s": 0.05}},
    })


def test_adapter_mix_is_zipf_and_stable_per_group() -> None:
    mix = AdapterMix(LoraTarget(num_adapters=4, zipf_s=1.0), seed=1)
    items = [WorkItem(i, (), 1) for i in range(4000)]
    counts = [sum(1 for it in items if mix.pick(it) == n) for n in mix.names]
    assert counts == sorted(counts, reverse=True) and counts[0] > 3 * counts[3]  # weights 1, 1/2, 1/3, 1/4
    grouped = [mix.pick(WorkItem(i, (), 1, group=7)) for i in range(20)]
    assert len(set(grouped)) == 1  # a tenant keeps its adapter
    assert AdapterMix(LoraTarget(share=0.0), seed=1).pick(items[0]) is None


def _run(policy: str) -> tuple[VirtualCluster, dict[str, Any]]:
    vc = VirtualCluster(_cfg(policy))
    res = vc.run()
    assert res.stages[0].summary.num_completed == 192
    for ep in vc.endpoints:
        assert ep.load.in_flight_adapters == {} and ep.metrics.max_lora == 2
    return vc, res.extra["lora"]


def test_placement_loads_fewer_adapters_than_round_robin() -> None:
    _, rr = _run("round-robin")
    _, placed = _run("lanterna-lora")
    assert placed["loads_total"] < rr["loads_total"] / 2
    assert placed["replicas_per_adapter_mean"] < rr["replicas_per_adapter_mean"]
    assert sum(v["loads"] for v in rr["per_replica"].values()) == rr["loads_total"]
