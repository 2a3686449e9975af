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
