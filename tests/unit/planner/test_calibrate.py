"""The step-time fit recovers known coefficients (host work subtracted), host costs come out of CPU phases, and
the fitted profile drives the real engine's timer, host stage included."""

from __future__ import annotations

import random

import pytest

from lanterna.planner.calibrate import CpuPhase, HostCost, StepSample, fit_steps, host_costs, tiny_cpu_profile
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


NO_HOST = HostCost()


def _curve_samples(host: HostCost = NO_HOST) -> list[StepSample]:
    """Engine: 5 ms step, 3 ms per chunk, 50 us per prefill token, 60 ns per attention pair, 40 us per decoding
    sequence, 2 ns per KV token attended; plus ``host``'s share of each probe."""
    c, chunk, tok, pair, seq, ctx = 0.005, 0.003, 50e-6, 60e-9, 40e-6, 2e-9
    out = [StepSample(c + chunk + tok * n + pair * n * n / 2 + host.request_s + host.token_s, prefill_tokens=n)
           for n in (32, 128, 256, 512, 1024)]
    for p in (16, 512):
        out += [StepSample(c + seq * n + ctx * n * (p + 24) + host.token_s * n, decode_seqs=n,
                           context_tokens=n * (p + 24)) for n in (1, 2, 4, 8, 16)]
    return out


def test_fit_separates_attention_pairs_and_decode_context() -> None:
    fit = fit_steps(_curve_samples())
    assert fit.prefill_pair_s == pytest.approx(60e-9, rel=1e-3)
    assert fit.prefill_token_s == pytest.approx(50e-6, rel=1e-3)
    assert fit.step_s == pytest.approx(0.005, rel=1e-3)
    assert fit.prefill_chunk_s == pytest.approx(0.003, rel=1e-2)
    assert fit.decode_seq_s == pytest.approx(40e-6, rel=1e-2)
    assert fit.decode_ctx_s == pytest.approx(2e-9, rel=1e-2)
    p = tiny_cpu_profile(fit)
    # a 64-token chunk over 256 cached tokens: 64 x 256 + 64^2/2 attention pairs
    assert p.prefill_attn_s(64, 256) == pytest.approx(0.003 + 64 * 50e-6 + (64 * 256 + 64 * 64 / 2) * 60e-9, rel=1e-2)


def test_fit_subtracts_the_host_work_the_probes_carried() -> None:
    host = HostCost(request_s=0.004, token_s=0.0003)
    fit = fit_steps(_curve_samples(host), host)
    assert fit.step_s == pytest.approx(0.005, rel=1e-3)
    assert fit.decode_seq_s == pytest.approx(40e-6, rel=1e-2)  # not 340 us: the API server's share is the host's
    assert fit.prefill_chunk_s == pytest.approx(0.003, rel=1e-2)
    assert fit.rms_rel_error < 1e-3  # predict() adds the host share back


def test_host_costs_solve_per_request_and_per_token_cpu() -> None:
    # 2 ms per request, 150 us per token, 0.1 core of background while idle
    short = CpuPhase(cpu_s=100 * 0.002 + 100 * 150e-6 + 0.1 * 2.0, wall_s=2.0, requests=100, tokens=100,
                     idle_cpu_per_s=0.1)
    long = CpuPhase(cpu_s=16 * 0.002 + 4096 * 150e-6 + 0.1 * 5.0, wall_s=5.0, requests=16, tokens=4096,
                    idle_cpu_per_s=0.1)
    h = host_costs(short, long)
    assert h.request_s == pytest.approx(0.002, rel=1e-6)
    assert h.token_s == pytest.approx(150e-6, rel=1e-6)
    total = h + HostCost(0.001, 50e-6, 0.008)
    assert (total.request_s, total.token_s, total.scrape_s) == pytest.approx((0.003, 200e-6, 0.008))


def test_host_stage_lengthens_steps_by_tokens_and_new_requests() -> None:
    fit = fit_steps(_curve_samples())
    bare = PhysicsTimer(tiny_cpu_profile(fit))
    hosted = PhysicsTimer(tiny_cpu_profile(fit, host=HostCost(request_s=0.004, token_s=0.0003)))
    decode = BatchShape(decode_contexts=[100] * 8)
    assert hosted.step_time(decode) - bare.step_time(decode) == pytest.approx(8 * 0.0003)
    # two prompts finish this step (two first tokens: two requests answered), one chunk does not
    mixed = BatchShape(prefill_chunks=[(64, 0), (64, 0), (2048, 0)], decode_contexts=[100] * 4,
                       num_prefill_sampled=2)
    assert hosted.step_time(mixed) - bare.step_time(mixed) == pytest.approx(6 * 0.0003 + 2 * 0.004)


def test_step_scatter_is_the_median_of_the_lone_streams_and_reaches_the_profile() -> None:
    samples = _samples(0.0)
    samples[5] = StepSample(samples[5].seconds, decode_seqs=1, gap_cv=0.2)
    samples.append(StepSample(samples[5].seconds, decode_seqs=1, context_tokens=600, gap_cv=0.4))
    samples.append(StepSample(samples[5].seconds, decode_seqs=1, context_tokens=900, gap_cv=0.3))
    fit = fit_steps(samples)
    assert fit.step_cv == pytest.approx(0.3)
    assert tiny_cpu_profile(fit).step_cv == pytest.approx(0.3)
    assert fit_steps(_samples(0.0)).step_cv == 0.0  # none measured: steps as the model says
    stalled = [*_samples(0.0), StepSample(0.006, decode_seqs=1, context_tokens=700, gap_cv=2.5)]
    assert fit_steps(stalled).step_cv == 0.5  # stalls, not steps: capped


def test_gap_scatter_of_a_stream() -> None:
    from lanterna.cli.plan_calibrate import _gap_cv

    even = [0.1 + 0.01 * i for i in range(20)]
    assert _gap_cv(even) == pytest.approx(0.0, abs=1e-9)
    times = [0.0, 0.1]  # the first gap (prefill) is not a decode step
    for i in range(16):
        times.append(times[-1] + (0.005 if i % 2 else 0.015))
    assert _gap_cv(times) == pytest.approx(0.5)
    assert _gap_cv(times[:6]) is None  # too few gaps to say
    coalesced = [0.0, 0.1]
    for i in range(16):  # every fourth chunk arrives in the same read as the one before
        coalesced.append(coalesced[-1] + (0.00001 if i % 4 == 3 else 0.01))
    assert _gap_cv(coalesced) is None  # not single steps: no scatter measured from it
