"""The physics step-time formula against every H100 calibration point, term by term and combined."""

from __future__ import annotations

import re

import pytest

from lanterna.sim.profiles import PROFILES, ModelProfile, calibration_points, get_profile
from lanterna.sim.timing import BatchShape, ConstantTimer, PerTokenTimer, PhysicsTimer, make_timer

MODELS = {"llama8b": "llama-3.1-8b-h100", "qwen32b_tp2": "qwen3-32b-tp2-h100"}
TOLERANCE = 0.10
_KEY = re.compile(r"^(llama8b|qwen32b_tp2)_(lin|lmhead|pfattn|dcattn)_(\w+?)(?:_xL)?$")


def _term_s(p: ModelProfile, kind: str, args: str) -> float:
    nums = [int(x[1:]) for x in args.split("_")]
    if kind == "lin":
        return p.linear_s(nums[0])
    if kind == "lmhead":
        return p.lm_head_s(nums[0])
    if kind == "pfattn":
        return p.prefill_attn_s(nums[0], 0)
    b, c = nums
    return p.decode_attn_s(b, b * c)


def _term_cases() -> list[tuple[str, str, str, float]]:
    cases = []
    for key, ms in calibration_points().items():
        m = _KEY.match(key)
        if m and not key.endswith("_GBps"):
            cases.append((MODELS[m[1]], m[2], m[3], ms / 1e3))
    return cases


TERM_CASES = _term_cases()


def test_every_model_has_all_four_terms() -> None:
    kinds = {(model, kind) for model, kind, _, _ in TERM_CASES}
    assert kinds == {(m, k) for m in MODELS.values() for k in ("lin", "lmhead", "pfattn", "dcattn")}
    assert len(TERM_CASES) == 2 * (11 + 3 + 3 + 5)


@pytest.mark.parametrize(
    ("model", "kind", "args", "measured_s"), TERM_CASES, ids=[f"{m}-{k}-{a}" for m, k, a, _ in TERM_CASES]
)
def test_term_matches_calibration(model: str, kind: str, args: str, measured_s: float) -> None:
    predicted = _term_s(PROFILES[model], kind, args)
    assert predicted == pytest.approx(measured_s, rel=TOLERANCE)


# Whole steps: (model prefix, batch, calibration keys whose sum the step should reproduce)
COMBINED = [
    ("prefill-512", BatchShape([(512, 0)], []), ["lin_M512", "lmhead_M1", "pfattn_S512_xL"]),
    ("prefill-2048", BatchShape([(2048, 0)], []), ["lin_M2048", "lmhead_M1", "pfattn_S2048_xL"]),
    ("prefill-8192", BatchShape([(8192, 0)], []), ["lin_M8192", "lmhead_M1", "pfattn_S8192_xL"]),
    ("decode-1x1024", BatchShape([], [1024]), ["lin_M1", "lmhead_M1", "dcattn_B1_C1024_xL"]),
    ("decode-64x2048", BatchShape([], [2048] * 64), ["lin_M64", "lmhead_M64", "dcattn_B64_C2048_xL"]),
    ("decode-256x2048", BatchShape([], [2048] * 256), ["lin_M256", "lmhead_M256", "dcattn_B256_C2048_xL"]),
]


@pytest.mark.parametrize("model_key", list(MODELS))
@pytest.mark.parametrize(("name", "batch", "keys"), COMBINED, ids=[c[0] for c in COMBINED])
def test_combined_step_matches_sum_of_kernels(
    model_key: str, name: str, batch: BatchShape, keys: list[str]
) -> None:
    p = PROFILES[MODELS[model_key]]
    cal = calibration_points()
    measured = sum(cal[f"{model_key}_{k}"] for k in keys) / 1e3
    modelled = PhysicsTimer(p).step_time(batch) - p.overhead_s - p.allreduce_s(batch.num_tokens)
    assert modelled == pytest.approx(measured, rel=TOLERANCE)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama-3.1-8b-h100", 131072),
        ("qwen3-32b-tp2-h100", 131072),
        ("llama-3.1-70b-tp4-h100", 81920),
        ("tiny-cpu", 4096),
    ],
)
def test_kv_bytes_per_token(name: str, expected: int) -> None:
    assert PROFILES[name].kv_bytes_per_token == expected


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profiles_have_room_for_kv_and_scale_with_block_size(name: str) -> None:
    p = PROFILES[name]
    assert p.num_gpu_blocks(16) > 1000
    assert p.num_gpu_blocks(32) == pytest.approx(p.num_gpu_blocks(16) / 2, abs=1)
    assert p.num_gpu_blocks(16, gpu_memory_utilization=0.5) < p.num_gpu_blocks(16)


def test_llama8b_block_count_is_plausible() -> None:
    # ~28k blocks x 16 = ~450k tokens, what vLLM reports for Llama-3.1-8B on one H100 at 0.9
    assert 25_000 < PROFILES["llama-3.1-8b-h100"].num_gpu_blocks(16) < 31_000


def test_tiny_cpu_is_about_5ms_plus_02ms_per_token() -> None:
    t = make_timer("physics", "tiny-cpu")
    one = t.step_time(BatchShape([], [128]))
    many = t.step_time(BatchShape([(256, 0)], []))
    assert 0.004 < one < 0.007
    assert 0.03 < many < 0.1


def test_step_time_grows_with_tokens_and_tp_adds_allreduce() -> None:
    t = PhysicsTimer(PROFILES["llama-3.1-8b-h100"])
    assert t.step_time(BatchShape([], [100])) < t.step_time(BatchShape([], [100] * 64))
    assert t.step_time(BatchShape([(512, 0)], [])) < t.step_time(BatchShape([(512, 4096)], []))
    assert t.step_time(BatchShape()) == 0.0
    assert PROFILES["llama-3.1-8b-h100"].allreduce_s(64) == 0.0
    assert PROFILES["qwen3-32b-tp2-h100"].allreduce_s(64) > 0.0


def test_simple_timers_and_factory() -> None:
    batch = BatchShape([(10, 0)], [5, 5])
    assert ConstantTimer(0.02).step_time(batch) == 0.02
    assert PerTokenTimer(0.005, 0.001).step_time(batch) == pytest.approx(0.017)
    assert make_timer("constant", step_s=0.03).step_time(batch) == 0.03
    assert make_timer("per_token", base_s=0.0, per_token_s=1.0).step_time(batch) == 12.0
    slow = make_timer("physics", "llama-3.1-8b-h100", overhead_s=1.0)
    assert slow.step_time(batch) > 1.0
    with pytest.raises(ValueError, match="unknown timer mode"):
        make_timer("quantum")
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("gpt-5")


def test_intermediate_prefill_chunks_skip_the_lm_head() -> None:
    p = PROFILES["llama-3.1-8b-h100"]
    t = PhysicsTimer(p)
    last = t.step_time(BatchShape([(512, 0)], [], num_prefill_sampled=1))
    middle = t.step_time(BatchShape([(512, 0)], [], num_prefill_sampled=0))
    assert last - middle == pytest.approx(p.lm_head_s(1))
    assert t.step_time(BatchShape([(512, 0)], [])) == pytest.approx(last)  # unknown: assume it samples
