"""predicted-latency-scorer: headroom choices against SLOs, lowest latency without one, early shedding of
sheddable requests, and the decision record that feeds the predictor at completion."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from lanterna.clock import VirtualClock
from lanterna.endpoints.types import Endpoint
from lanterna.scheduler import SchedRequest, SchedulerServices, parse_epp_config
from lanterna.scheduler.plugins.scorer.predicted_latency import PredictedLatencyScorer, SloShed
from lanterna.scheduler.predict import STATE_LATENCY_DECISION, LatencyPredictor, LatencyPrior, record_latency
from lanterna.scheduler.predict.features import tpot_features, ttft_features
from tests.unit.scheduler.helpers import ep, plugin, scheduler

# TTFT = 50 ms + 100 ms per 1k uncached tokens + 100 ms per 1k queued tokens; TPOT = 10 ms + 20 ms per 16 seqs
PRIOR = LatencyPrior(ttft=(0.05, 0.1, 0.1, 0, 0, 0, 0, 0, 0, 0), tpot=(0.01 - 0.02 / 16, 0.02, 0, 0, 0, 0), ridge=1e6)


class FixedIndex:
    """A ``KVIndexView`` whose matches are given (the real index is tested in kvindex/)."""

    def __init__(self, matched: dict[str, float]) -> None:
        self.matched = matched

    def match(self, model: str, lora: str | None, token_ids: Sequence[int], endpoint_ids: Sequence[str]
              ) -> dict[str, float]:
        return {k: v for k, v in self.matched.items() if k in endpoint_ids}

    def block_size_for(self, model: str) -> int | None:
        return 16


def make(clock: VirtualClock | None = None, kv: FixedIndex | None = None, **params: Any) -> PredictedLatencyScorer:
    s: PredictedLatencyScorer = plugin("predicted-latency-scorer", {"bootstrapProfile": "", **params},
                                       SchedulerServices(kv_index=kv, clock=clock or VirtualClock()))
    s.predictor = LatencyPredictor(PRIOR)
    return s


def node(eid: str, queued: int = 0, seqs: int = 0) -> Endpoint:
    e = ep(eid, prefill_tokens=queued)
    e.load.in_flight_decode_seqs = seqs
    return e


def request(ttft_ms: float | None = None, tpot_ms: float | None = None, priority: int = 0,
            received_at: float | None = None) -> SchedRequest:
    return SchedRequest("r", "m", token_ids=list(range(1000)), priority=priority, received_at=received_at,
                        slo_ttft_s=ttft_ms / 1e3 if ttft_ms else None, slo_tpot_s=tpot_ms / 1e3 if tpot_ms else None)


def best(scores: dict[str, float]) -> str:
    return max(scores, key=lambda k: scores[k])


CASES = [
    # (id, endpoints (id, queued prefill tokens, in-flight seqs), SLO ttft ms, SLO tpot ms, cached blocks, winner)
    ("ttft-slo-most-headroom", [("A", 0, 0), ("B", 2000, 0), ("C", 8000, 0)], 500, None, {}, "A"),
    ("tpot-slo-beats-fastest-ttft", [("A", 0, 64), ("B", 1000, 0)], 500, 50, {}, "B"),
    ("no-slo-fastest-ttft", [("A", 0, 64), ("B", 1000, 0)], None, None, {}, "A"),
    ("prefix-hit-wins-despite-queue", [("A", 0, 0), ("B", 500, 0)], 500, None, {"B": 50}, "B"),
    ("all-miss-least-deficit", [("A", 3000, 0), ("B", 6000, 0)], 100, None, {}, "A"),
]


@pytest.mark.parametrize(("eps", "ttft", "tpot", "cached", "winner"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_headroom_choice(eps: list[tuple[str, int, int]], ttft: float | None, tpot: float | None,
                         cached: dict[str, float], winner: str) -> None:
    s = make(kv=FixedIndex(cached))
    cands = [node(*e) for e in eps]
    scores = s.score(request(ttft, tpot), cands)
    assert best(scores) == winner
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_probability_reflects_headroom_and_uncertainty() -> None:
    s = make()
    cands = [node("A", 0), node("B", 3500)]  # predicted 0.15 s and 0.5 s
    scores = s.score(request(400), cands)
    assert scores["A"] > 0.9 and scores["B"] < 0.5
    # a request that already waited 300 ms in the queue has 100 ms left: now both are predicted to miss
    clock = VirtualClock()
    clock.set(10.3)
    s2 = make(clock)
    scores2 = s2.score(request(400, received_at=10.0), cands)
    assert max(scores2.values()) < 0.5 and best(scores2) == "A"


def test_spent_budget_ranks_by_speed_not_by_deficit() -> None:
    clock = VirtualClock()
    clock.set(30.0)
    cands = [node("A", 0), node("B", 20000)]  # predicted 0.15 s and 2.15 s
    r = request(1000, received_at=5.0)  # waited 25 s: its 1 s TTFT budget is long gone
    scores = make(clock).score(r, cands)
    assert best(scores) == "A"  # a budget of -24 s must not make the slowest replica look closest to it
    with pytest.raises(SloShed):
        make(clock).score(request(1000, priority=-1, received_at=5.0), cands)


def test_sheddable_request_predicted_to_miss_everywhere_is_shed() -> None:
    cands = [node("A", 3000), node("B", 6000)]  # predicted 0.45 s and 0.75 s
    with pytest.raises(SloShed) as err:
        make().score(request(100, priority=-1), cands)
    assert err.value.status == 429
    assert err.value.headers["x-llm-d-request-dropped-reason"] == "rejected-saturated"
    make().score(request(100, priority=0), cands)  # not sheddable: served by the least bad endpoint
    make().score(request(600, priority=-1), cands)  # A meets it: not shed
    make().score(request(None, priority=-1), cands)  # no SLO: never shed by prediction


def test_unrolled_predictions_match_the_feature_law() -> None:
    rng = random.Random(5)
    s = make()
    s.predictor = LatencyPredictor(LatencyPrior(ttft=tuple(rng.random() for _ in range(10)),
                                                tpot=tuple(rng.random() for _ in range(6))))
    cands = []
    for i in range(8):
        e = ep(f"e{i}", prefill_tokens=rng.randrange(9000), kv_tokens=rng.randrange(90000),
               num_waiting=rng.randrange(5), kv_cache_usage=rng.random(), running_lora_adapters=frozenset({"x"}))
        e.load.in_flight_decode_seqs = rng.randrange(400)
        cands.append(e)
    r = request()
    r.lora = "ad"
    pr = s.predict(r, cands)
    ct, cp = s.predictor.coefs("m")
    for e in cands:
        ld, m = e.load, e.metrics
        tx = ttft_features(1000, ld.in_flight_prefill_tokens, ld.in_flight_decode_seqs, m.num_waiting,
                           m.kv_cache_usage, 0.0, 1.0)
        px = tpot_features(ld.in_flight_decode_seqs, ld.in_flight_kv_tokens, ld.in_flight_prefill_tokens,
                           m.kv_cache_usage, m.num_waiting)
        t, p, _ = pr.by_endpoint[e.id]
        assert t == pytest.approx(s.predictor.ttft(ct, tx)) and p == pytest.approx(s.predictor.tpot(cp, px))


def test_decision_feeds_the_predictor_at_completion() -> None:
    doc = {"plugins": [{"type": "predicted-latency-scorer"},  # bootstrapped from the default sim profile
                       {"type": "max-score-picker"}],
           "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "predicted-latency-scorer"},
                                                                  {"pluginRef": "max-score-picker"}]}]}
    sched = scheduler(parse_epp_config(doc))
    sched.clock.set(5.0)  # type: ignore[attr-defined]
    r = request(500)
    res = sched.schedule(r, [node("A"), node("B", 4000)])
    sched.pre_request(r, res)
    assert r.state[STATE_LATENCY_DECISION].endpoint_id == res.targets[0].id == "A"
    assert record_latency(r, "B", 5.2, 0.01) is None  # served elsewhere (a retry): teaches nothing
    r2 = request(500)
    res2 = sched.schedule(r2, [node("A"), node("B", 4000)])
    sched.pre_request(r2, res2)
    seen = record_latency(r2, res2.targets[0].id, 5.2, 0.01)
    assert seen is not None and seen.ttft_s == pytest.approx(0.2) and seen.tpot_s == 0.01
    assert record_latency(r2, res2.targets[0].id, 5.2, 0.01) is None  # once per request
    pl = sched.plugin("predicted-latency-scorer")
    assert pl.predictor.errors()["m"][0].count == 1  # type: ignore[attr-defined]


def test_affinity_gate_keeps_a_request_on_its_cache_unless_that_misses_the_slo() -> None:
    # B holds 800 of 1000 prompt tokens but has 1500 queued: predicted 0.22 s vs A's 0.15 s (A: cold, idle)
    cands = [node("A", 0), node("B", 1500)]
    kv = FixedIndex({"B": 50})
    assert best(make(kv=kv).score(request(1000), cands)) == "B"  # both surely meet: stay on the cache
    assert best(make(kv=kv, affinityGateTau=0).score(request(1000), cands)) == "A"  # gate off: greedy
    assert best(make(kv=kv).score(request(200), cands)) == "A"  # only leaving the cache meets a 200 ms SLO
