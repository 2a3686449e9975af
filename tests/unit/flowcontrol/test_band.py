"""PriorityBand: round-robin across fairness ids, FCFS within, O(1) removal that keeps the rotation bounded."""

from __future__ import annotations

from lanterna.flowcontrol import FlowEntry, FlowRequest, PriorityBand


def entry(seq: int, fid: str) -> FlowEntry:
    return FlowEntry(FlowRequest(f"{fid}{seq}", fairness_id=fid), seq, 0.0, 1.0)


def pop_all(band: PriorityBand) -> list[str]:
    out = []
    while (e := band.pop()) is not None:
        out.append(e.request.request_id)
    return out


def test_round_robin_and_fcfs() -> None:
    band = PriorityBand(0)
    for seq, fid in enumerate("AAABBC"):
        band.push(entry(seq, fid))
    assert len(band) == 6 and band.flows() == {"A": 3, "B": 2, "C": 1}
    assert pop_all(band) == ["A0", "B3", "C5", "A1", "B4", "A2"]
    assert len(band) == 0 and band.pop() is None


def test_remove_from_middle_and_newest() -> None:
    band = PriorityBand(-1)
    es = [entry(i, fid) for i, fid in enumerate("ABAB")]
    for e in es:
        band.push(e)
    assert band.newest() is es[3]
    assert band.remove(es[3]) and not band.remove(es[3])
    assert band.newest() is es[2]
    assert band.remove(es[1])  # B is now empty; A keeps serving
    assert pop_all(band) == ["A0", "A2"]


def test_refilled_flow_keeps_one_turn() -> None:
    band = PriorityBand(0)
    a0, b1 = entry(0, "A"), entry(1, "B")
    band.push(a0)
    band.push(b1)
    band.remove(a0)
    band.push(entry(2, "A"))  # A refills while its stale id is still in the rotation: no double turn
    band.push(entry(3, "A"))
    assert pop_all(band) == ["A2", "B1", "A3"]


def slo_entry(seq: int, fid: str, deadline: float | None) -> FlowEntry:
    return FlowEntry(FlowRequest(f"{fid}{seq}", fairness_id=fid, slo_deadline=deadline), seq, 0.0, 100.0)


def test_slo_deadline_ordering_earliest_first_then_fcfs() -> None:
    band = PriorityBand(0, edf=True)
    for seq, (fid, dl) in enumerate([("A", None), ("A", 5.0), ("A", 2.0), ("A", None), ("A", 2.0), ("B", 9.0),
                                     ("B", None)]):
        band.push(slo_entry(seq, fid, dl))
    # A: deadlines 2.0 (seq 2, then seq 4: ties by arrival), 5.0, then the ones without an SLO in arrival order;
    # fairness ids still take turns
    assert pop_all(band) == ["A2", "B5", "A4", "B6", "A1", "A0", "A3"]


def test_slo_deadline_remove_is_lazy_and_bounded() -> None:
    band = PriorityBand(0, edf=True)
    es = [slo_entry(i, "A", float(100 - i)) for i in range(200)]
    for e in es:
        band.push(e)
    for e in es[:190]:
        assert band.remove(e)
    assert len(band) == 10
    flow = band._flows["A"]
    assert len(flow.heap) <= 2 * len(flow.live) + 16  # compacted: removed entries do not pile up
    assert pop_all(band) == [f"A{i}" for i in range(199, 189, -1)]


def test_fcfs_band_ignores_deadlines() -> None:
    band = PriorityBand(0)
    for seq, dl in enumerate([None, 9.0, 1.0]):
        band.push(slo_entry(seq, "A", dl))
    assert pop_all(band) == ["A0", "A1", "A2"]
