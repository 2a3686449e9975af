"""Table-driven formula tests, one per scorer plugin (edge cases: ties, zeros, thresholds)."""

from __future__ import annotations

import pytest

from lanterna.scheduler.framework.types import STATE_PREFIX_APPROX, PrefixMatch
from lanterna.scheduler.plugins.scorer.session_affinity import session_token_for
from tests.unit.scheduler.helpers import ep, plugin, req


def _score(type_name, cands, r=None, params=None):
    return plugin(type_name, params).score(r or req("x"), cands)


@pytest.mark.parametrize(
    ("queues", "want"),
    [([0, 0, 0], [1, 1, 1]), ([0, 5, 10], [1, 0.5, 0]), ([3], [1]), ([2, 4], [1, 0])],
    ids=["all-equal", "spread", "single", "two"],
)
def test_queue_scorer(queues, want):
    got = _score("queue-scorer", [ep(f"e{i}", num_waiting=q) for i, q in enumerate(queues)])
    assert [got[f"e{i}"] for i in range(len(queues))] == pytest.approx(want)


@pytest.mark.parametrize(
    ("running", "want"), [([1, 1], [1, 1]), ([0, 4, 8], [1, 0.5, 0])], ids=["equal", "spread"]
)
def test_running_requests_size_scorer(running, want):
    got = _score("running-requests-size-scorer", [ep(f"e{i}", num_running=n) for i, n in enumerate(running)])
    assert [got[f"e{i}"] for i in range(len(running))] == pytest.approx(want)


@pytest.mark.parametrize(("kv", "want"), [(0.0, 1.0), (0.25, 0.75), (1.0, 0.0)], ids=["empty", "quarter", "full"])
def test_kv_cache_utilization_scorer(kv, want):
    assert _score("kv-cache-utilization-scorer", [ep("a", kv_cache_usage=kv)])["a"] == pytest.approx(want)


@pytest.mark.parametrize(
    ("q", "threshold", "want"),
    [(0, 128, 0.5), (64, 128, 0.25), (128, 128, 0.0), (500, 128, 0.0), (1, 2, 0.25)],
    ids=["idle", "half", "at-threshold", "over", "custom-threshold"],
)
def test_load_aware_scorer(q, threshold, want):
    got = _score("load-aware-scorer", [ep("a", num_waiting=q)], params={"threshold": threshold})
    assert got["a"] == pytest.approx(want)


@pytest.mark.parametrize(
    ("inflight", "idle", "want"),
    [([0, 0], 0, [1, 1]), ([0, 2, 4], 0, [1, 0.5, 0]), ([1, 3], 1, [1, 0]), ([2, 2], 0, [0, 0])],
    ids=["all-idle", "spread", "idle-threshold", "equal-busy"],
)
def test_active_request_scorer(inflight, idle, want):
    cands = [ep(f"e{i}", inflight=n) for i, n in enumerate(inflight)]
    got = _score("active-request-scorer", cands, params={"idleThreshold": idle})
    assert [got[f"e{i}"] for i in range(len(inflight))] == pytest.approx(want)


@pytest.mark.parametrize(
    ("kv", "prefill", "want"),
    [(0, 0, 1.0), (2_097_152, 0, 0.5), (0, 1_048_576, 0.75), (10**8, 0, 0.0)],
    ids=["idle", "half-kv", "prefill-only", "saturated"],
)
def test_token_load_scorer(kv, prefill, want):
    assert _score("token-load-scorer", [ep("a", kv_tokens=kv, prefill_tokens=prefill)])["a"] == pytest.approx(want)


@pytest.mark.parametrize(
    ("lora", "running", "waiting", "max_lora", "want"),
    [(None, set(), set(), 0, 1.0), ("A", {"A"}, set(), 1, 1.0), ("A", {"B"}, set(), 2, 0.8),
     ("A", {"B"}, {"A"}, 1, 0.6), ("A", {"B"}, set(), 1, 0.0)],
    ids=["no-adapter", "running", "room", "waiting", "none"],
)
def test_lora_affinity_scorer(lora, running, waiting, max_lora, want):
    e = ep("a", running_lora_adapters=frozenset(running), waiting_lora_adapters=frozenset(waiting), max_lora=max_lora)
    assert _score("lora-affinity-scorer", [e], r=req("x", lora=lora))["a"] == want


@pytest.mark.parametrize(
    ("token", "want_a", "want_b"),
    [(None, 0, 0), ("b", 0, 1), (session_token_for("a"), 1, 0), ("garbage!!", 0, 0)],
    ids=["none", "raw-id", "base64", "unknown"],
)
def test_session_affinity_scorer(token, want_a, want_b):
    got = _score("session-affinity-scorer", [ep("a"), ep("b")], r=req("x", session_token=token))
    assert (got["a"], got["b"]) == (want_a, want_b)


def test_session_affinity_reads_header():
    got = _score("session-affinity-scorer", [ep("a"), ep("b")], r=req("x", headers={"x-session-token": "b"}))
    assert got == {"a": 0.0, "b": 1.0}


@pytest.mark.parametrize(
    ("hit", "lru", "want"),
    [(True, [], {"a": 0.5, "b": 0.5, "c": 0.5}), (False, [], {"a": 1.0, "b": 0.5, "c": 0.0}),
     (False, ["a"], {"b": 1.0, "c": 0.5, "a": 0.0}), (False, ["c", "a"], {"b": 1.0, "c": 0.5, "a": 0.0})],
    ids=["any-hit-neutral", "never-used-in-order", "used-goes-last", "lru-order"],
)
def test_no_hit_lru_scorer(hit, lru, want):
    s = plugin("no-hit-lru-scorer")
    for eid in lru:
        s._lru[eid] = None
    r = req("x")
    r.state[STATE_PREFIX_APPROX] = PrefixMatch(total_blocks=4, block_size_tokens=16, matched={"a": 2} if hit else {})
    assert s.score(r, [ep("a"), ep("b"), ep("c")]) == pytest.approx(want)


def test_no_hit_lru_bounded():
    s = plugin("no-hit-lru-scorer", {"lruSize": 2})
    from lanterna.scheduler.framework.types import ProfileResult, SchedulingResult

    for eid in ["a", "b", "c"]:
        r = req("x")
        s.score(r, [ep(eid)])
        s.pre_request(r, SchedulingResult({"default": ProfileResult([ep(eid)])}, "default"))
    assert list(s._lru) == ["b", "c"]


@pytest.mark.parametrize(
    ("label", "n_prompt", "want"),
    [(None, 100, 0.5), ("0-1000", 100, 0.55), ("0-200", 100, 0.75), ("200-400", 100, 0.0), ("bad", 100, 0.0)],
    ids=["unlabelled", "loose-fit", "tight-fit", "out-of-range", "malformed"],
)
def test_context_length_aware_scorer(label, n_prompt, want):
    labels = {"llm-d.ai/context-length-range": label} if label else {}
    got = _score("context-length-aware", [ep("a", labels=labels)], r=req("x" * (4 * n_prompt)))
    assert got["a"] == pytest.approx(want)


# cost-model-scorer: tests/unit/scheduler/plugins/scorer/test_cost_model.py
