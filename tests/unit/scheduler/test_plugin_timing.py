"""The per-plugin timing hook: every plugin call reported once, with the injected clock, same picks;
unset, the scheduler runs the plain plugins again."""

from __future__ import annotations

from lanterna.scheduler.framework.profile import SchedulerProfile
from tests.unit.scheduler.helpers import ep, req, scheduler
from tests.unit.scheduler.test_framework import PD


class FakePerf:
    """Each read advances 1 ms, so every call measures exactly 1 ms."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.001
        return self.t


def test_default_config_reports_each_plugin_once_per_cycle() -> None:
    calls: list[tuple[str, str, str, float]] = []
    s = scheduler("default")
    eps = [ep("a", num_waiting=1), ep("b", kv_cache_usage=0.5)]
    plain = s.schedule(req("hello world " * 8), eps)
    s.set_plugin_timer(lambda *a: calls.append(a), FakePerf())
    r = req("hello world " * 8)
    timed = s.schedule(r, eps)
    assert [t.id for t in timed.targets] == [t.id for t in plain.targets]
    assert {(p, t) for p, t, _n, _s in calls} == {
        ("DataProducer", "prefix-cache-scorer"), ("ProfileHandler", "single-profile-handler"), ("Scorer", "queue-scorer"),
        ("Scorer", "kv-cache-utilization-scorer"), ("Scorer", "prefix-cache-scorer"),
        ("Picker", "max-score-picker")}
    assert [c[2] for c in calls if c[0] == "Scorer"] == ["queue-scorer", "kv-cache-utilization-scorer",
                                                        "prefix-cache-scorer"]
    assert all(abs(c[3] - 0.001) < 1e-12 for c in calls)
    n = len(calls)
    s.pre_request(r, timed)
    s.response_complete(r, timed, timed.targets[0].id, 0)
    points = {c[0] for c in calls[n:]}
    assert "PreRequest" in points  # the prefix-cache scorer records where the prompt went
    s.set_plugin_timer(None)
    calls.clear()
    s.schedule(req("x"), eps)
    assert calls == []
    assert s._timed is None
    assert all(type(p) is SchedulerProfile and p.scorers[0].scorer.__class__.__name__ != "TimedScorer"
               for p in s.profiles.values())


def test_sampled_timing_reports_one_cycle_in_every_n_with_the_same_picks() -> None:
    calls: list[tuple[str, str, str, float]] = []
    plain, sampled = scheduler("default"), scheduler("default")
    sampled.set_plugin_timer(lambda *a: calls.append(a), FakePerf(), every=4)
    eps = [ep("a", num_waiting=1), ep("b", kv_cache_usage=0.5)]
    for i in range(9):  # cycles 0, 4 and 8 are timed
        r1, r2 = req(f"prompt {i} " * 8), req(f"prompt {i} " * 8)
        a, b = plain.schedule(r1, eps), sampled.schedule(r2, eps)
        assert [t.id for t in a.targets] == [t.id for t in b.targets]
        plain.pre_request(r1, a)
        sampled.pre_request(r2, b)
        sampled.response_complete(r2, b, b.targets[0].id, 0)
    assert sum(1 for c in calls if c[0] == "Picker") == 3
    assert sum(1 for c in calls if c[0] == "DataProducer") == 3
    assert sum(1 for c in calls if c[0] == "PreRequest") == 3 * len(sampled._pre)


def test_pd_filters_and_handler_are_timed() -> None:
    calls: list[tuple[str, str, str, float]] = []
    s = scheduler(PD)
    s.set_plugin_timer(lambda *a: calls.append(a), FakePerf())
    res = s.schedule(req("A" * 64), [ep("p1", role="prefill"), ep("d1", role="decode")])
    assert res.prefill() is not None and res.prefill().id == "p1"
    assert ("Filter", "prefill-filter") in {(c[0], c[1]) for c in calls}
    assert ("Filter", "decode-filter") in {(c[0], c[1]) for c in calls}
    assert ("ProfileHandler", "disagg-profile-handler") in {(c[0], c[1]) for c in calls}
