"""cost-model-scorer: cost = uncached + queueScale x queued (uncached share) + decodeScale x seqs, normalised."""

from __future__ import annotations

import pytest

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler import SchedulerServices
from lanterna.scheduler.framework.types import (
    STATE_PREFIX_APPROX,
    PrefixMatch,
    ProfileResult,
    SchedulingResult,
)
from tests.unit.scheduler.helpers import ep, plugin, req

CRISP = {"minSpanTokens": 0}  # plain min-max, so the cheaper endpoint scores exactly 1 and the other 0


def _approx(s, r, matched, blocks):
    r.state[f"{STATE_PREFIX_APPROX}/{s.approx.name}"] = PrefixMatch(blocks, 16, dict(matched))


def _loaded(eid, seqs=0, prefill=0):
    e = ep(eid, inflight=seqs, prefill_tokens=prefill)
    e.load.in_flight_decode_seqs = seqs
    return e


@pytest.mark.parametrize(
    ("prompt_blocks", "matched", "a_load", "want_a", "want_b"),
    [
        (4, {}, (0, 0), 1.0, 1.0),
        (4, {"a": 4}, (0, 0), 1.0, 0.0),
        (4, {"a": 4}, (1, 0), 0.0, 1.0),  # 64-token miss is cheaper than one co-running sequence (128)
        (4, {"a": 4, "b": 4}, (0, 64), 0.0, 1.0),
        (256, {"a": 256}, (10, 0), 1.0, 0.0),  # a 4096-token history stays despite 10 sequences (1280)
        (256, {"a": 256}, (40, 0), 0.0, 1.0),  # ...but not on a replica 40 sequences busier (5120)
    ],
    ids=["cold-idle", "cache-wins", "decode-pressure-beats-small-miss", "both-cached-queue-decides",
         "warm-session-stays", "far-busier-loses"],
)
def test_cost_model_formula(prompt_blocks, matched, a_load, want_a, want_b):
    s = plugin("cost-model-scorer", CRISP)
    r = req("y" * (64 * prompt_blocks))  # 16 tokens per block
    _approx(s, r, matched, prompt_blocks)
    got = s.score(r, [_loaded("a", *a_load), ep("b")])
    assert (got["a"], got["b"]) == pytest.approx((want_a, want_b))


def test_min_span_keeps_small_gaps_small():
    """A 64-token gap scores 1 - 64/256, so a tie-break scorer can still act on near-equal costs."""
    s = plugin("cost-model-scorer")
    r = req("y" * 256)
    _approx(s, r, {"a": 4}, 4)
    got = s.score(r, [ep("a"), ep("b")])
    assert got == pytest.approx({"a": 1.0, "b": 0.75})


def _commit(s, r, target: Endpoint) -> SchedulingResult:
    res = SchedulingResult({"default": ProfileResult([target])}, "default")
    s.pre_request(r, res)
    return res


def test_queue_counts_only_the_uncached_share_of_in_flight_prompts():
    """A queue of mostly-cached prompts is short: 4000 queued tokens of which 10% uncached cost 100."""
    s = plugin("cost-model-scorer", {"decodeScale": 0, "queueScale": 1.0, "recentScale": 0, **CRISP})
    a, b = ep("a"), ep("b")
    first = req("y" * 16000, request_id="r1")  # 4000 tokens, 3600 of them cached on a
    _approx(s, first, {"a": 225}, 250)
    s.score(first, [a, b])
    res = _commit(s, first, a)
    a.load.in_flight_requests, a.load.in_flight_prefill_tokens = 1, 4000
    nxt = req("y" * 16000, request_id="r2")
    _approx(s, nxt, {"a": 225}, 250)
    costs = s.costs(nxt, [a, b])
    assert costs["a"] == pytest.approx(400 + 400) and costs["b"] == pytest.approx(4000)
    s.response_complete(first, res, "a", None)
    assert s.sent["a"].prompt == 0 and s.sent["a"].uncached == 0


def test_recent_traffic_spreads_new_sessions_but_not_warm_ones():
    """Sessions in think time are not in flight: what an endpoint received lately stands in for the load its
    sessions will bring, so a new session goes elsewhere, a warm history stays, and the charge decays."""
    s = plugin("cost-model-scorer", {"recentWindow": 4})
    a, b = ep("a"), ep("b")  # nothing in flight anywhere (every session is between turns)
    for i in range(3):
        r = req("y" * 400, request_id=f"s{i}")
        s.score(r, [a, b])
        _commit(s, r, a)
    cold = req("z" * 400, request_id="new")  # 100 tokens, shared prefix of 64 cached on a
    _approx(s, cold, {"a": 4}, 6)
    costs = s.costs(cold, [a, b])
    recent_a = 1 + 0.75 + 0.75**2
    assert costs["a"] == pytest.approx(36 + 64 * recent_a) and costs["b"] == pytest.approx(100)
    warm = req("w" * 4000, request_id="warm")  # 1000 tokens, 960 of them cached on a
    _approx(s, warm, {"a": 60}, 62)
    assert s.score(warm, [a, b])["a"] == 1.0
    for i in range(8):  # traffic elsewhere: a's charge decays by 3/4 per request placed
        r = req("v" * 400, request_id=f"b{i}")
        s.score(r, [a, b])
        _commit(s, r, b)
    assert s.costs(req("q" * 400, request_id="q"), [a, b])["a"] == pytest.approx(100 + 64 * recent_a * 0.75**8)
    s.endpoint_removed("a")
    assert "a" not in s.recent


def test_forgets_its_share_when_nothing_is_in_flight():
    s = plugin("cost-model-scorer", {"queueScale": 1.0, **CRISP})
    a = ep("a")
    r = req("y" * 400, request_id="lost")
    s.score(r, [a])
    _commit(s, r, a)  # response_complete never comes (e.g. the gateway died mid-request)
    s.score(req("y" * 400, request_id="next"), [a])
    assert s.sent["a"].prompt == 0


class FakeKVIndex:
    def __init__(self, matched):
        self.matched, self.calls = matched, 0

    def match(self, model, lora, token_ids, endpoint_ids):
        self.calls += 1
        return {k: v for k, v in self.matched.items() if k in endpoint_ids}

    def block_size_for(self, model):
        return 16


def test_uses_precise_index_with_tier_credit():
    idx = FakeKVIndex({"a": 4.0, "b": 3.2})  # b: 4 blocks on CPU tier at 0.8
    s = plugin("cost-model-scorer", CRISP, services=SchedulerServices(kv_index=idx))
    r = req("", token_ids=list(range(64)))
    got = s.score(r, [ep("a"), ep("b"), ep("c")])
    assert got["a"] == 1.0 and got["c"] == 0.0 and got["b"] == pytest.approx(0.8)
    s.score(r, [ep("a"), ep("b"), ep("c")])
    assert idx.calls == 1  # computed once per request, cached in req.state


def test_prefix_in_flight_counts_as_cached_until_the_response_completes():
    """The index hears of a prefix only after its prefill: the second request must not recompute it."""
    idx = FakeKVIndex({})
    s = plugin("cost-model-scorer", {"recentScale": 0, **CRISP}, services=SchedulerServices(kv_index=idx))
    a, b = ep("a"), ep("b")
    system = list(range(5000))
    first = req("", request_id="g0", token_ids=system + [1] * 300)
    s.score(first, [a, b])
    res = _commit(s, first, a)
    second = req("", request_id="g1", token_ids=system + [2] * 300)
    got = s.costs(second, [a, b])
    assert got["a"] < got["b"] - 4000  # credited with the 4864 in-flight prefix tokens (stride 256)
    s.response_complete(first, res, "a", None)
    assert not s.pending.owners
    third = req("", request_id="g2", token_ids=system + [3] * 300)
    got = s.costs(third, [a, b])
    assert got["a"] == got["b"]  # nothing cached, nothing in flight (recent traffic not charged here)


def test_pending_match_is_the_consecutive_run_per_endpoint():
    from lanterna.scheduler.plugins.scorer.pending import PendingPrefixes

    pend = PendingPrefixes(stride_blocks=1)  # one key per 16-token block
    base = list(range(64))  # 4 blocks
    a, b = req("", request_id="a", token_ids=base), req("", request_id="b", token_ids=base[:32] + [9] * 32)
    pend.add(a, "A", 16)
    pend.add(b, "B", 16)
    probe = req("", request_id="p", token_ids=base[:48] + [7] * 16)
    assert pend.match(probe, 16, [ep("A"), ep("B"), ep("C")]) == {"A": 3.0, "B": 2.0}
    pend.remove(a)
    assert pend.match(req("", request_id="q", token_ids=base), 16, [ep("A"), ep("B")]) == {"B": 2.0}
    pend.remove(b)
    assert not pend.owners


def test_no_hit_lru_treats_an_in_flight_prefix_as_a_hit():
    """The second request of a new prefix is not spread as cold while the first is still prefilling."""
    from lanterna.scheduler import lanterna_recommended_config
    from tests.unit.scheduler.helpers import scheduler

    sched = scheduler(lanterna_recommended_config(), seed=1, services=SchedulerServices(kv_index=FakeKVIndex({})))
    eps = [ep(f"e{i}") for i in range(4)]
    system = list(range(4000))
    first = req("", request_id="g0", token_ids=system + [1] * 200)
    res = sched.schedule(first, eps)
    sched.pre_request(first, res)
    second = req("", request_id="g1", token_ids=system + [2] * 200)
    assert sched.schedule(second, eps).targets[0] is res.targets[0]


def test_builtin_approx_index_capacity_is_configurable():
    s = plugin("cost-model-scorer", {"lruCapacityPerServer": 64})
    assert s.approx.index.capacity_per_endpoint == 64
