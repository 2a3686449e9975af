"""FlowCore decisions in virtual time: order of service, capacity, TTL, shedding, eviction, accounting."""

from __future__ import annotations

import pytest

from lanterna.clock import VirtualClock
from lanterna.flowcontrol import DropReason, EntryState, FlowConfig, FlowCore, FlowEntry, FlowRequest


class Sat:
    """A settable saturation flag (the gateway's real one is a cached flag too)."""

    def __init__(self) -> None:
        self.on = False

    def __call__(self) -> bool:
        return self.on


def make(**kw: object) -> tuple[FlowCore, VirtualClock, Sat]:
    clock, sat = VirtualClock(), Sat()
    return FlowCore(FlowConfig(**kw), clock, sat), clock, sat  # type: ignore[arg-type]


def req(rid: str, fid: str = "default", prio: int = 0, ttl: float | None = None) -> FlowRequest:
    return FlowRequest(rid, fairness_id=fid, priority=prio, model="m", ttl_s=ttl)


def drain(core: FlowCore, first: FlowEntry) -> list[str]:
    """Release one at a time, collecting the order in which queued requests get their slot."""
    order: list[str] = []
    running = [first]
    while running:
        granted = core.release(running.pop(0))
        order += [e.request.request_id for e in granted]
        running += granted
    return order


def test_fast_path_grants_until_capacity_then_queues() -> None:
    core, _, _ = make(max_concurrency=2)
    a, _ = core.admit(req("a"))
    b, _ = core.admit(req("b"))
    c, _ = core.admit(req("c"))
    assert (a.state, b.state, c.state) == (EntryState.GRANTED, EntryState.GRANTED, EntryState.QUEUED)
    assert (core.in_flight, core.num_queued) == (2, 1)
    assert [e.request.request_id for e in core.release(a)] == ["c"]
    assert c.state is EntryState.GRANTED and core.in_flight == 2 and core.num_queued == 0


def test_strict_priority_between_bands() -> None:
    core, _, _ = make(max_concurrency=1)
    first, _ = core.admit(req("run"))
    for rid, prio in [("low", -1), ("mid", 0), ("high", 5), ("mid2", 0), ("high2", 5)]:
        core.admit(req(rid, prio=prio))
    assert drain(core, first) == ["high", "high2", "mid", "mid2", "low"]


def test_round_robin_across_tenants_fcfs_within() -> None:
    core, _, _ = make(max_concurrency=1)
    first, _ = core.admit(req("run"))
    for i in range(4):
        core.admit(req(f"A{i}", fid="A"))  # tenant A floods first
    core.admit(req("B0", fid="B"))
    core.admit(req("B1", fid="B"))
    core.admit(req("C0", fid="C"))
    assert drain(core, first) == ["A0", "B0", "C0", "A1", "B1", "A2", "A3"]


def test_release_is_idempotent_and_never_underflows() -> None:
    core, _, _ = make(max_concurrency=1)
    a, _ = core.admit(req("a"))
    core.release(a)
    core.release(a)
    assert core.in_flight == 0


@pytest.mark.parametrize(
    ("prio", "in_flight", "reason"),
    [(-1, 1, DropReason.SHED), (0, 0, DropReason.SATURATED), (-5, 0, DropReason.SHED)],
    ids=["sheddable-shed", "nothing-in-flight", "sheddable-idle"],
)
def test_saturation_drops(prio: int, in_flight: int, reason: DropReason) -> None:
    core, _, sat = make(max_concurrency=10)
    if in_flight:
        core.admit(req("running"))
    sat.on = True
    e, _ = core.admit(req("x", prio=prio))
    assert e.state is EntryState.DROPPED and e.drop_reason is reason
    assert reason.header == "rejected-saturated"


def test_saturated_with_work_in_flight_queues_and_poke_dispatches() -> None:
    core, _, sat = make(max_concurrency=10)
    core.admit(req("running"))
    sat.on = True
    e, _ = core.admit(req("waits"))
    assert e.state is EntryState.QUEUED and core.blocked_by_saturation
    assert core.dispatch() == []
    sat.on = False
    assert core.dispatch() == [e] and e.state is EntryState.GRANTED


def test_arrival_after_saturation_clears_serves_queue_first() -> None:
    core, _, sat = make(max_concurrency=10)
    core.admit(req("running"))
    sat.on = True
    old, _ = core.admit(req("old"))
    sat.on = False
    new, changed = core.admit(req("new"))
    assert list(changed) == [old] and old.state is new.state is EntryState.GRANTED


def test_queue_full_rejects_when_nothing_to_evict() -> None:
    core, _, _ = make(max_concurrency=1, max_queue_len=2)
    core.admit(req("run"))
    core.admit(req("q1"))
    core.admit(req("q2"))
    e, _ = core.admit(req("q3"))
    assert e.drop_reason is DropReason.QUEUE_FULL and core.num_queued == 2


def test_higher_priority_evicts_newest_of_lowest_sheddable_band() -> None:
    core, _, _ = make(max_concurrency=1, max_queue_len=3)
    core.admit(req("run"))
    core.admit(req("s1-old", prio=-1))
    core.admit(req("s2", prio=-2))
    core.admit(req("s1-new", prio=-1))
    e, changed = core.admit(req("critical", prio=1))
    assert e.state is EntryState.QUEUED
    assert [(v.request.request_id, v.drop_reason) for v in changed] == [("s2", DropReason.EVICTED)]
    e2, changed2 = core.admit(req("normal", prio=0))
    assert [v.request.request_id for v in changed2] == ["s1-new"]
    e3, changed3 = core.admit(req("sheddable", prio=-1))  # equal priority does not evict
    assert e3.drop_reason is DropReason.QUEUE_FULL and not changed3


def test_per_flow_cap_bounds_one_tenant() -> None:
    core, _, _ = make(max_concurrency=1, max_queue_len=100, max_queue_len_per_flow=2)
    core.admit(req("run"))
    core.admit(req("a1", fid="A"))
    core.admit(req("a2", fid="A"))
    a3, _ = core.admit(req("a3", fid="A"))
    b1, _ = core.admit(req("b1", fid="B"))
    assert a3.drop_reason is DropReason.QUEUE_FULL and b1.state is EntryState.QUEUED


def test_ttl_expiry_in_virtual_time() -> None:
    core, clock, _ = make(max_concurrency=1, queue_ttl_s=2.0)
    core.admit(req("run"))
    short, _ = core.admit(req("short", ttl=0.5))
    long, _ = core.admit(req("long"))
    clock.advance(1.0)
    assert core.expire_due() == [short]
    assert short.drop_reason is DropReason.TTL_EXPIRED and short.drop_reason.header == "rejected-ttl-expired"
    clock.advance(1.0)
    assert core.expire_due() == [long] and core.num_queued == 0


def test_cancel_leaves_queue_and_gives_back_granted_slot() -> None:
    core, _, _ = make(max_concurrency=1)
    run, _ = core.admit(req("run"))
    a, _ = core.admit(req("a"))
    b, _ = core.admit(req("b"))
    assert core.cancel(a) == () and a.drop_reason is DropReason.CANCELLED and core.num_queued == 1
    assert core.release(run) == [b]
    assert core.cancel(b) == () and core.in_flight == 0  # a granted slot comes back on cancel


def test_wait_time_and_stats() -> None:
    core, clock, _ = make(max_concurrency=1)
    run, _ = core.admit(req("run"))
    q, _ = core.admit(req("q", fid="T", prio=3))
    s = core.stats()
    assert s.queued_by_priority == {3: 1} and s.queued_by_flow == {("T", 3): 1} and s.in_flight == 1
    clock.advance(0.25)
    core.release(run)
    assert q.wait_s == pytest.approx(0.25)
    s = core.stats()
    assert (s.admitted_total, s.dispatched_total, s.enqueued_total, s.num_queued) == (2, 2, 1, 0)
    assert s.queue_wait_s_sum == pytest.approx(0.25) and s.queued_by_priority == {}


def test_bands_and_rotation_stay_bounded_under_churn() -> None:
    core, _, _ = make(max_concurrency=1, max_queue_len=10_000)
    core.admit(req("run"))
    for i in range(5_000):  # unique tenants that queue and leave
        e, _ = core.admit(req(f"r{i}", fid=f"t{i}", prio=i % 3))
        core.cancel(e)
    assert core.num_queued == 0 and core.stats().queued_by_priority == {}
    for band in core._bands.values():  # noqa: SLF001 - checking the bound itself
        assert len(band._rotation) < 100  # noqa: SLF001


def test_sheddable_shed_when_saturated_even_at_own_limit() -> None:
    core, _, sat = make(max_concurrency=1)
    core.admit(req("running"))
    sat.on = True
    shed, _ = core.admit(req("s", prio=-1))
    normal, _ = core.admit(req("n"))
    assert shed.drop_reason is DropReason.SHED and normal.state is EntryState.QUEUED


def test_slo_deadline_ordering_inside_a_band_strict_priority_between() -> None:
    core, _, _ = make(max_concurrency=1, ordering="slo-deadline")
    first, _ = core.admit(req("run"))
    for rid, prio, dl in [("batch", 0, None), ("loose", 0, 9.0), ("tight", 0, 1.0), ("high", 5, None),
                          ("tight2", 0, 1.0), ("shed", -1, 0.5)]:
        core.admit(FlowRequest(rid, priority=prio, model="m", slo_deadline=dl))
    # priority first; inside priority 0, earliest deadline first (ties by arrival), no-SLO requests last
    assert drain(core, first) == ["high", "tight", "tight2", "loose", "batch", "shed"]


def test_fcfs_ordering_is_the_default() -> None:
    core, _, _ = make(max_concurrency=1)
    first, _ = core.admit(req("run"))
    for rid, dl in [("a", None), ("b", 9.0), ("c", 1.0)]:
        core.admit(FlowRequest(rid, model="m", slo_deadline=dl))
    assert drain(core, first) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="ordering"):
        FlowConfig(ordering="lifo")


def test_hold_queues_every_arrival_without_dropping_and_dispatch_resumes_in_order() -> None:
    from lanterna.clock import VirtualClock
    from lanterna.flowcontrol import EntryState, FlowConfig, FlowCore, FlowRequest

    clock = VirtualClock()
    core = FlowCore(FlowConfig(max_concurrency=2, queue_ttl_s=60), clock, lambda: True)  # "saturated" too
    core.held = True
    entries = [core.admit(FlowRequest(f"r{i}"))[0] for i in range(3)]
    assert [e.state for e in entries] == [EntryState.QUEUED] * 3  # not dropped as "saturated, nothing in flight"
    assert core.dispatch() == [] and core.in_flight == 0
    clock.advance(40.0)
    core.held = False
    core.saturated = lambda: False
    granted = core.dispatch()
    assert [e.request.request_id for e in granted] == ["r0", "r1"] and granted[0].wait_s == 40.0
    assert entries[2].state is EntryState.QUEUED
