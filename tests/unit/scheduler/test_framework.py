"""Framework: clamping, weights, deterministic tie-breaks, NoCapacity, profile handlers."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from lanterna.errors import ConfigError, NoCapacity
from lanterna.scheduler import SchedulerServices, register
from tests.unit.scheduler.helpers import ep, req, scheduler


@dataclass
class FixedScorer:
    name: str
    table: dict[str, float]
    type_name: str = "test-fixed-scorer"

    def score(self, r, cands):
        return {e.id: self.table.get(e.id, 0.0) for e in cands}


@register("test-fixed-scorer")
def _make_fixed(name: str, params: Mapping[str, Any], services: SchedulerServices) -> FixedScorer:
    return FixedScorer(name, {k: float(v) for k, v in params.items()})


def cfg(scorers, picker="max-score-picker", extra=()):
    plugins = [{"name": n, "type": "test-fixed-scorer", "parameters": t} for n, t, _ in scorers]
    plugins += [{"type": picker}, *extra]
    refs = [{"pluginRef": n, "weight": w} for n, _, w in scorers] + [{"pluginRef": picker}]
    return {"plugins": plugins, "schedulingProfiles": [{"name": "p", "plugins": refs}]}


def sched_from(d, seed=0):
    from lanterna.scheduler import parse_epp_config

    return scheduler(parse_epp_config(d), seed=seed)


EPS = [ep("a"), ep("b"), ep("c")]


@pytest.mark.parametrize(
    ("scorers", "want_scores", "want_primary"),
    [
        ([("s1", {"a": 5.0, "b": -3.0, "c": 0.5}, 1)], {"a": 1.0, "b": 0.0, "c": 0.5}, "a"),
        ([("s1", {"a": 1.0}, 1), ("s2", {"b": 1.0}, 2)], {"a": 1.0, "b": 2.0, "c": 0.0}, "b"),
        ([("s1", {"a": 0.5, "b": 0.4}, 3), ("s2", {"b": 1.0}, 0)], {"a": 1.5, "b": 1.2, "c": 0.0}, "a"),
        ([("s1", {"a": float("nan"), "b": 0.1}, 1)], {"a": 0.0, "b": 0.1, "c": 0.0}, "b"),
    ],
    ids=["clamped", "weighted-sum-not-normalised", "zero-weight-ignored", "nan-is-zero"],
)
def test_scores_are_clamped_and_weighted(scorers, want_scores, want_primary):
    res = sched_from(cfg(scorers)).schedule(req("x"), EPS)
    assert res.primary.scores == pytest.approx(want_scores)
    assert res.targets[0].id == want_primary


def test_tie_break_is_random_but_seeded():
    d = cfg([("s1", {}, 1)])
    scheds = [sched_from(d, seed) for seed in (1, 1, 2)]
    picks = [[s.schedule(req("x"), EPS).targets[0].id for _ in range(30)] for s in scheds]
    assert picks[0] == picks[1]  # same seed, same sequence
    assert picks[0] != picks[2]
    assert set(picks[0]) == {"a", "b", "c"}  # ties are spread, not always the first


def test_fallbacks_follow_by_score():
    res = sched_from(cfg([("s1", {"a": 0.2, "b": 0.9, "c": 0.5}, 1)])).schedule(req("x"), EPS)
    assert [e.id for e in res.targets] == ["b", "c", "a"]


def test_no_candidates_raises_no_capacity():
    with pytest.raises(NoCapacity):
        scheduler("default").schedule(req("x"), [])


def test_filters_emptying_candidates_raise_no_capacity():
    d = cfg([], extra=[{"type": "prefill-filter"}])
    d["schedulingProfiles"][0]["plugins"].insert(0, {"pluginRef": "prefill-filter"})
    s = sched_from(d)
    with pytest.raises(NoCapacity):
        s.schedule(req("x"), [ep("a", role="decode")])
    assert s.schedule(req("x"), [ep("a", role="decode"), ep("p", role="prefill")]).targets[0].id == "p"


def test_no_picker_defaults_to_max_score():
    d = {"plugins": [{"type": "queue-scorer"}], "schedulingProfiles": [{"name": "x", "plugins": [{"pluginRef": "queue-scorer"}]}]}
    s = sched_from(d)
    assert s.plugin_names() == {"x": ["queue-scorerx1", "max-score-picker"]}
    assert s.schedule(req("q"), [ep("a", num_waiting=3), ep("b", num_waiting=1)]).targets[0].id == "b"


def test_round_robin_cycles():
    d = {"plugins": [{"type": "round-robin"}], "schedulingProfiles": [{"name": "x", "plugins": [{"pluginRef": "round-robin"}]}]}
    s = sched_from(d)
    assert [s.schedule(req("q"), [ep("c"), ep("a"), ep("b")]).targets[0].id for _ in range(4)] == ["a", "b", "c", "a"]


PD = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: prefill-filter
- type: decode-filter
- type: prefix-cache-scorer
  parameters: {blockSizeTokens: 1}
- type: queue-scorer
- type: prefix-based-pd-decider
  parameters: {nonCachedTokens: 8}
- type: disagg-profile-handler
schedulingProfiles:
- name: prefill
  plugins: [{pluginRef: prefill-filter}, {pluginRef: queue-scorer}]
- name: decode
  plugins: [{pluginRef: decode-filter}, {pluginRef: prefix-cache-scorer, weight: 2}, {pluginRef: queue-scorer}]
"""


def test_pd_handler_runs_prefill_only_for_long_uncached_prompts():
    s = scheduler(PD)
    eps = [ep("p1", role="prefill"), ep("d1", role="decode"), ep("d2")]
    long_r = req("A" * 64)  # 16 tokens, all uncached >= 8
    res = s.schedule(long_r, eps)
    assert res.primary_profile == "decode" and res.targets[0].id in {"d1", "d2"}
    assert res.prefill() is not None and res.prefill().id == "p1"
    s.pre_request(long_r, res)
    again = s.schedule(req("A" * 64 + "B" * 8), eps)  # 16 of 18 tokens cached on that decode endpoint
    assert again.targets[0].id == res.targets[0].id and again.prefill() is None
    short = s.schedule(req("C" * 20), eps)  # 5 tokens < 8
    assert short.prefill() is None


def test_pd_handler_falls_back_to_decode_only_without_prefill_endpoints():
    res = scheduler(PD).schedule(req("A" * 64), [ep("d1", role="decode")])
    assert res.targets[0].id == "d1" and res.prefill() is None


def test_pd_handler_no_decode_endpoint_is_no_capacity():
    with pytest.raises(NoCapacity):
        scheduler(PD).schedule(req("A" * 64), [ep("p1", role="prefill")])


def test_pd_alias_and_missing_decode_profile():
    bad = PD.replace("name: decode", "name: dec")
    with pytest.raises(ConfigError, match="decodeProfile"):
        scheduler(bad)
    assert scheduler(PD.replace("disagg-profile-handler", "pd-profile-handler")).handler.type_name == "disagg-profile-handler"


def test_response_complete_and_endpoint_hooks_reach_plugins():
    s = scheduler("default")
    r = req("A" * 400)
    res = s.schedule(r, EPS)
    s.pre_request(r, res)
    s.response_complete(r, res, res.targets[0].id, 96)
    s.endpoint_removed(res.targets[0].id)
    assert s.plugin("prefix-cache-scorer").index.num_entries() == 0


def test_decision_is_deterministic_across_runs():
    def run():
        s = scheduler("lanterna", seed=5)
        rng = random.Random(1)
        out = []
        eps = [ep(f"e{i}") for i in range(8)]
        for _i in range(50):
            r = req(f"prefix-{rng.randrange(5)} " * 50)
            res = s.schedule(r, eps)
            s.pre_request(r, res)
            res.targets[0].load.in_flight_requests += 1
            out.append(res.targets[0].id)
        return out

    assert run() == run()
