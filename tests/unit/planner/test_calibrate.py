"""The step-time fit recovers known coefficients, and its profile drives the real engine's timer."""

from __future__ import annotations

import random

import pytest

from lanterna.planner.calibrate import StepSample, fit_steps, tiny_cpu_profile
from lanterna.sim.timing import BatchShape, PhysicsTimer


def _samples(noise: float, seed: int = 0) -> list[StepSample]:
    rng = random.Random(seed)
    c, chunk, tok, seq = 0.004, 0.010, 20e-6, 0.0005
    out = [StepSample((c + chunk + tok * n) * (1 + rng.uniform(-noise, noise)), prefill_tokens=n)
           for n in (32, 128, 256, 512, 1024)]
    out += [StepSample((c + seq * n) * (1 + rng.uniform(-noise, noise)), decode_seqs=n) for n in (1, 2, 4, 8, 16)]
    return out


def test_fit_recovers_exact_coefficients() -> None:
    fit = fit_steps(_samples(0.0))
    assert fit.step_s == pytest.approx(0.004, rel=1e-6)
    assert fit.prefill_chunk_s == pytest.approx(0.010, rel=1e-6)
    assert fit.prefill_token_s == pytest.approx(20e-6, rel=1e-6)
    assert fit.decode_seq_s == pytest.approx(0.0005, rel=1e-6)
    assert fit.rms_rel_error < 1e-9


def test_fit_tolerates_noise() -> None:
    fit = fit_steps(_samples(0.05, seed=3))
    assert fit.prefill_token_s == pytest.approx(20e-6, rel=0.25)
    assert fit.rms_rel_error < 0.06


def test_fit_needs_both_kinds() -> None:
    with pytest.raises(ValueError):
        fit_steps([StepSample(0.01, prefill_tokens=10), StepSample(0.02, prefill_tokens=20)])


def test_fitted_profile_times_mixed_steps_and_sizes_kv() -> None:
    fit = fit_steps(_samples(0.0))
    p = tiny_cpu_profile(fit)
    t = PhysicsTimer(p)
    assert t.step_time(BatchShape(prefill_chunks=[(100, 0)])) == pytest.approx(0.004 + 0.010 + 100 * 20e-6)
    assert t.step_time(BatchShape(decode_contexts=[50] * 4)) == pytest.approx(0.004 + 4 * 0.0005)
    mixed = BatchShape(prefill_chunks=[(100, 0)], decode_contexts=[50] * 4)
    assert t.step_time(mixed) == pytest.approx(0.004 + 0.010 + 100 * 20e-6 + 4 * 0.0005)
    assert p.kv_bytes_per_token == 4 * 2 * 64 * 2 * 4  # the tiny model: fp32, 4 layers, 2 KV heads of 64


def test_fit_shrugs_off_one_stalled_sample() -> None:
    samples = _samples(0.0)
    samples[6] = StepSample(samples[6].seconds * 20, decode_seqs=samples[6].decode_seqs)  # a 20x stall
    fit = fit_steps(samples)
    assert fit.decode_seq_s == pytest.approx(0.0005, rel=0.05)
    assert fit.step_s == pytest.approx(0.004, rel=0.05)
