"""The memory model against published parameter counts and vLLM's reported KV capacity."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from lanterna.planner.arch import arch_from_config, load_arch
from lanterna.planner.gpus import GPUS, get_gpu
from lanterna.planner.memory import GIB, Parallelism, feasible_tp, kv_bytes_per_request, plan_memory

H100 = get_gpu("H100")


@pytest.mark.parametrize(("name", "total_b", "active_b"), [
    ("llama-3.1-8b", 8.03, 8.03), ("llama-3.1-70b", 70.6, 70.6), ("qwen3-32b", 32.8, 32.8),
    ("mixtral-8x7b", 46.7, 12.9), ("qwen3-30b-a3b", 30.5, 3.3), ("deepseek-v3", 671, 37),
])
def test_parameter_counts_match_published(name: str, total_b: float, active_b: float) -> None:
    a = load_arch(name)
    assert a.params / 1e9 == pytest.approx(total_b, rel=0.02)
    assert a.active_params / 1e9 == pytest.approx(active_b, rel=0.03)


def test_llama_8b_on_one_h100_matches_vllm_kv_capacity() -> None:
    """vLLM at gpu_memory_utilization 0.9 on one H100 80GB reports ~430-470k KV tokens for Llama-3.1-8B."""
    p = plan_memory(load_arch("llama-3.1-8b"), H100)
    assert 430_000 <= p.kv_cache_tokens <= 470_000
    assert p.weight_bytes / GIB == pytest.approx(14.96, abs=0.05)  # vLLM logs "took 14.99 GiB"
    assert p.kv_bytes_per_token == 32 * 8 * 128 * 2 * 2  # 128 KiB
    assert p.max_concurrent_requests == p.num_gpu_blocks // (8192 // 16)
    assert 50 <= p.max_concurrent_requests <= 58


def test_llama_70b_tp4_and_tp8() -> None:
    a = load_arch("llama-3.1-70b")
    tp4 = plan_memory(a, H100, Parallelism(tp=4))
    assert tp4.weight_bytes / GIB == pytest.approx(32.9, abs=0.2)
    assert tp4.kv_bytes_per_token == 80 * 2 * 128 * 2 * 2  # 8 KV heads / 4 ranks
    assert 450_000 <= tp4.kv_cache_tokens <= 520_000
    tp8 = plan_memory(a, H100, Parallelism(tp=8))
    assert tp8.kv_cache_tokens > 2.5 * tp4.kv_cache_tokens  # half the weights, half the KV per token
    assert plan_memory(a, H100).fits is False  # 131 GiB of weights on one 80 GB device
    assert feasible_tp(a, H100)[:3] == [2, 4, 8]


def test_qwen3_32b() -> None:
    a = load_arch("qwen3-32b")
    assert a.num_sliding_layers == 0  # use_sliding_window: false
    tp1, tp2 = plan_memory(a, H100), plan_memory(a, H100, Parallelism(tp=2))
    assert 25_000 <= tp1.kv_cache_tokens <= 50_000  # 61 GiB of weights leave ~9 GiB
    assert 300_000 <= tp2.kv_cache_tokens <= 345_000


def test_moe_mixtral_and_expert_parallel() -> None:
    a = load_arch("mixtral-8x7b")
    p = plan_memory(a, H100, Parallelism(tp=2))
    assert p.weight_bytes / GIB == pytest.approx(43.5, abs=0.3)
    assert 380_000 <= p.kv_cache_tokens <= 460_000
    # EP spreads whole experts: same bytes per device as TP sharding when ep == tp
    assert plan_memory(a, H100, Parallelism(tp=2, ep=2)).weight_bytes == pytest.approx(p.weight_bytes)
    q = load_arch("qwen3-30b-a3b")
    ep8 = plan_memory(q, H100, Parallelism(tp=1, ep=8))  # wide EP, attention replicated per DP rank
    assert ep8.weight_bytes < plan_memory(q, H100).weight_bytes / 4


def test_mla_kv_is_one_latent_replicated_over_tp() -> None:
    a = load_arch("deepseek-v3")
    assert a.is_mla and a.weight_bytes_per_param == 1.0  # fp8 checkpoint
    for tp in (1, 8):
        assert kv_bytes_per_request(a, 1, tp=tp) == 61 * (512 + 64) * 2
    p = plan_memory(a, get_gpu("H200"), Parallelism(tp=8, ep=8))
    assert p.fits and p.weight_bytes / GIB == pytest.approx(78, abs=3)
    assert not plan_memory(a, H100, Parallelism(tp=8, ep=8)).fits


def test_sliding_window_layers_cap_a_requests_kv() -> None:
    cfg = {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
           "vocab_size": 1000, "sliding_window": 128,
           "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]}
    a = arch_from_config(cfg)
    assert (a.sliding_window, a.num_sliding_layers) == (128, 2)
    per_layer = 2 * 2 * 64 * 2
    assert kv_bytes_per_request(a, 1000) == per_layer * (2 * 1000 + 2 * 128)
    mistral = arch_from_config({**cfg, "layer_types": None})
    assert mistral.num_sliding_layers == 4


def test_safetensors_header_gives_exact_weight_bytes(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text((Path(__file__).parents[3] / "src/lanterna/planner/data/models/"
                                           "llama-3.1-8b.json").read_text())
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "w": {"dtype": "BF16", "shape": [1000, 1000], "data_offsets": [0, 2_000_000]},
                         "b": {"dtype": "F32", "shape": [10], "data_offsets": [2_000_000, 2_000_040]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    a = load_arch(tmp_path)
    assert a.exact_weight_bytes == 2_000_040
    assert plan_memory(a, H100).weight_bytes == pytest.approx(2_000_040, rel=1e-9)


def test_catalogue_and_lookup() -> None:
    assert set(GPUS) == {"H100", "H200", "B200", "A100", "L40S", "MI300X", "TPU-v6e"}
    assert get_gpu("v6e") is GPUS["TPU-v6e"] and get_gpu("h200") is GPUS["H200"]
    with pytest.raises(ValueError, match="unknown GPU"):
        get_gpu("V100")
    bigger = plan_memory(load_arch("llama-3.1-8b"), get_gpu("H200"))
    assert bigger.kv_cache_tokens > 1.9 * plan_memory(load_arch("llama-3.1-8b"), H100).kv_cache_tokens


def test_unknown_model_names_the_bundled_ones() -> None:
    with pytest.raises(FileNotFoundError, match="llama-3.1-8b"):
        load_arch("no-such-model")


def test_dense_planned_profile_matches_the_calibrated_h100_profile() -> None:
    from lanterna.planner.profile import build_profile
    from lanterna.sim import get_profile
    from lanterna.sim.timing import BatchShape, PhysicsTimer

    ref, planned = PhysicsTimer(get_profile("llama-3.1-8b-h100")), PhysicsTimer(
        build_profile(load_arch("llama-3.1-8b"), H100))
    for b in (BatchShape(prefill_chunks=[(2048, 0)]), BatchShape(decode_contexts=[1000] * 64)):
        assert planned.step_time(b) == pytest.approx(ref.step_time(b), rel=1e-6)


def test_moe_profile_reads_touched_experts_and_pays_all_to_all() -> None:
    from lanterna.planner.profile import build_profile
    from lanterna.sim.timing import BatchShape, PhysicsTimer

    a = load_arch("qwen3-30b-a3b")
    p = build_profile(a, H100)
    one, many = p._expert_terms(1), p._expert_terms(4096)
    assert one[0] == pytest.approx(8 * a.expert_params * 2 * a.num_moe_layers)  # top-8 experts read
    assert many[0] == pytest.approx(128 * a.expert_params * 2 * a.num_moe_layers, rel=1e-3)  # all of them
    dec = [PhysicsTimer(p).step_time(BatchShape(decode_contexts=[1000] * n)) for n in (1, 8, 64)]
    assert dec[0] < dec[1] < dec[2]  # more sequences touch more experts
    ep = build_profile(a, H100, Parallelism(tp=1, ep=8))
    assert ep.allreduce_s(256) > 0 == p.allreduce_s(256)
    assert ep.weight_bytes < p.weight_bytes / 4
