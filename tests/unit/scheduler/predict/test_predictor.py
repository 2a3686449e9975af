"""The latency predictor: learns a known linear law from noisy samples, keeps bounded memory, bootstraps from
the simulator's timing model, and accounts its own error."""

from __future__ import annotations

import random

import pytest

from lanterna.scheduler.predict import LatencyPredictor, LatencyPrior, prior_from_profile, prior_from_step
from lanterna.scheduler.predict.bootstrap import simulated_tpot, simulated_ttft
from lanterna.scheduler.predict.features import TPOT_FEATURES, TTFT_FEATURES, tpot_features, ttft_features
from lanterna.scheduler.predict.rls import OnlineRidge

TTFT_LAW = (0.02, 0.06, 0.05, 0.01, 0.004, 0.003, 0.01, -0.005, 0.2, 0.8)  # bias, per-ktok, ..., seat wait
TPOT_LAW = (0.012, 0.004, 0.002, 0.006, 0.003, 0.0005)


def _state(rng: random.Random) -> tuple[tuple[float, ...], tuple[float, ...]]:
    u, q, d = rng.randrange(16, 16000), rng.randrange(0, 40000), rng.randrange(0, 320)
    w, kv, pr, na = rng.randrange(0, 8), rng.random(), rng.random(), float(rng.random() < 0.2)
    return ttft_features(u, q, d, w, kv, pr, na), tpot_features(d, rng.randrange(0, 400000), q, kv, w)


def _dot(c: tuple[float, ...], x: tuple[float, ...]) -> float:
    return sum(a * b for a, b in zip(c, x, strict=True))


def test_learns_a_known_linear_law_from_noisy_samples() -> None:
    rng = random.Random(7)
    pred = LatencyPredictor(forget=1.0)
    for _ in range(3000):
        tx, px = _state(rng)
        noise = 1.0 + rng.gauss(0, 0.05)  # 5% multiplicative noise, like real step jitter
        pred.observe("m", tx, px, _dot(TTFT_LAW, tx) * noise, _dot(TPOT_LAW, px) * noise)
    ct, cp = pred.coefs("m")
    assert ct == pytest.approx(TTFT_LAW, abs=0.01)
    assert cp == pytest.approx(TPOT_LAW, abs=0.001)
    # fresh states: within a few percent of the law
    errs = []
    for _ in range(200):
        tx, px = _state(rng)
        errs.append(abs(pred.ttft(ct, tx) / _dot(TTFT_LAW, tx) - 1))
        errs.append(abs(pred.tpot(cp, px) / _dot(TPOT_LAW, px) - 1))
    assert sum(errs) / len(errs) < 0.02
    te, pe = pred.errors()["m"]
    assert te.count == pe.count == 3000
    assert te.rel_err < 0.1 and pe.rel_err < 0.1  # the EWMA settled near the noise level


def test_follows_a_drifting_law_with_forgetting() -> None:
    rng = random.Random(3)
    pred = LatencyPredictor(forget=0.99)
    for law in (TTFT_LAW, tuple(2 * c for c in TTFT_LAW)):  # the replicas got twice as slow
        for _ in range(1500):
            tx, px = _state(rng)
            pred.observe("m", tx, px, _dot(law, tx), None)
    assert pred.coefs("m")[0] == pytest.approx(tuple(2 * c for c in TTFT_LAW), abs=0.01)


def test_memory_is_bounded() -> None:
    pred = LatencyPredictor(max_models=4)
    for i in range(50):
        pred.coefs(f"model-{i}")
    assert len(pred) == 4 and set(pred.errors()) == {f"model-{i}" for i in range(46, 50)}
    m = pred.model("model-49")
    assert m.ttft.P.shape == (len(TTFT_FEATURES),) * 2 and m.tpot.P.shape == (len(TPOT_FEATURES),) * 2
    # many identical samples (no excitation) never wind the covariance up past its cap
    r = OnlineRidge(3, forget=0.9, max_trace=100.0)
    for _ in range(5000):
        r.update((1.0, 0.0, 0.0), 1.0)
    assert float(r.P.trace()) <= 100.0 + 1e-9 and r.coef[0] == pytest.approx(1.0, rel=1e-4)


def test_bootstrap_prior_tracks_the_timing_model() -> None:
    prior = prior_from_profile("qwen3-32b-tp2-h100")
    pred = LatencyPredictor(prior)
    ct, cp = pred.coefs("m")
    from lanterna.sim.timing import BatchShape, make_timer

    timer = make_timer("physics", "qwen3-32b-tp2-h100")

    def step(chunks: list[tuple[int, int]], decodes: list[int]) -> float:
        return timer.step_time(BatchShape(chunks, decodes, num_prefill_sampled=len(chunks)))

    for u, q, d in ((1000, 0, 0), (4000, 8000, 16), (8000, 24000, 48)):
        sim = simulated_ttft(step, u, q, d, 8192)
        assert pred.ttft(ct, ttft_features(u, q, d, 0, 0, 0, 0)) == pytest.approx(sim, rel=0.35)
    sim = simulated_tpot(step, 16, 17 * 2048, 0, 8192)
    assert pred.tpot(cp, tpot_features(16, 17 * 2048, 0, 0, 0)) == pytest.approx(sim, rel=0.35)
    # more uncached work, more predicted TTFT; the prior is what an untrained predictor answers
    assert pred.ttft(ct, ttft_features(8000, 0, 0, 0, 0, 0, 0)) > pred.ttft(ct, ttft_features(100, 0, 0, 0, 0, 0, 0))
    assert LatencyPredictor().coefs("m")[0] == (0.0,) * len(TTFT_FEATURES)


def test_prior_from_a_linear_step_is_recovered_exactly_enough() -> None:
    # step = 5 ms + 0.1 ms per token: TTFT of W tokens alone ~ ceil(W / 8192) x 5 ms + 0.1 ms x W
    prior = prior_from_step(lambda ch, dc: 0.005 + 1e-4 * (sum(n for n, _ in ch) + len(dc)))
    assert isinstance(prior, LatencyPrior)
    pred = LatencyPredictor(prior)
    ct, _ = pred.coefs("m")
    assert pred.ttft(ct, ttft_features(4000, 0, 0, 0, 0, 0, 0)) == pytest.approx(0.405, rel=0.15)


def test_observation_error_is_of_the_prediction_before_learning() -> None:
    pred = LatencyPredictor(LatencyPrior(ttft=(0.1,) + (0.0,) * 9, tpot=(0.01,) + (0.0,) * 5))
    tx, px = ttft_features(0, 0, 0, 0, 0, 0, 0), tpot_features(0, 0, 0, 0, 0)
    seen = pred.observe("m", tx, px, 0.2, 0.01)
    assert seen.ttft_pred_s == pytest.approx(0.1) and seen.ttft_ape == pytest.approx(0.5)
    assert seen.tpot_ape == pytest.approx(0.0)
    assert pred.errors()["m"][0].mape == pytest.approx(0.5)


def test_load_weights_never_lower_a_prediction() -> None:
    r = OnlineRidge(2, nonneg=(1,), forget=1.0)
    for i in range(200):
        x = i / 100
        r.update((1.0, x), 2.0 - 0.5 * x)  # data with a negative load slope (collinearity does this)
    assert float(r.theta[1]) == pytest.approx(-0.5, abs=1e-3)  # the fit stays honest
    assert r.coef == (pytest.approx(2.0, abs=1e-3), 0.0)  # predictions never fall with load
    pred = LatencyPredictor()
    m = pred.model("m")
    m.ttft.theta[:] = -0.1
    m.ttft.coef = m.ttft._coef()
    busy = ttft_features(0, 50000, 300, 9, 1.0, 0, 1)
    assert pred.ttft(pred.coefs("m")[0], busy) == pred.ttft(pred.coefs("m")[0], ttft_features(0, 0, 0, 0, 0, 0, 0))
