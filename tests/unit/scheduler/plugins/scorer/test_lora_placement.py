"""``lanterna-lora-placement-scorer``: the formula table, the slot mirror, and the bound on replicas per adapter."""

from __future__ import annotations

from typing import Any

import pytest

from lanterna.endpoints.types import Endpoint
from lanterna.routing.accounting import LoadTicket
from lanterna.scheduler import SchedulingResult
from lanterna.scheduler.framework.types import ProfileResult
from tests.unit.scheduler.helpers import ep, plugin, req, scheduler

TYPE = "lanterna-lora-placement-scorer"


def lep(eid: str, *, running: set[str] = frozenset(), waiting: set[str] = frozenset(), cap: int = 2,  # type: ignore[assignment]
        inflight: dict[str, int] | None = None, others: int = 0) -> Endpoint:
    """An endpoint with scraped LoRA state; ``inflight``: adapter requests the gateway has there; ``others``:
    extra in-flight requests without an adapter."""
    e = ep(eid, running_lora_adapters=frozenset(running), waiting_lora_adapters=frozenset(waiting), max_lora=cap)
    for name, n in (inflight or {}).items():
        for _ in range(n):
            LoadTicket(e, 10, 1, name)
    for _ in range(others):
        LoadTicket(e, 10, 1)
    return e


CASES: list[tuple[str | None, list[Endpoint], dict[str, list[str]], dict[str, Any], dict[str, float]]] = [
    # (adapter, endpoints, mirror of resident adapters, params, want)
    (None, [lep("a", running={"x", "y"})], {}, {}, {"a": 1.0}),
    ("A", [lep("a", running={"A"}), lep("b", others=3)], {}, {}, {"a": 1.0, "b": 0.2}),
    ("A", [lep("a", inflight={"A": 1}), lep("b", others=3)], {}, {}, {"a": 1.0, "b": 0.2}),
    ("A", [lep("a", running={"B", "C"}, waiting={"A"})], {}, {}, {"a": 0.6}),
    ("A", [lep("a", running={"B"}, waiting={"A"})], {}, {}, {"a": 1.0}),
    ("A", [lep("a", running={"B", "C"}), lep("b", running={"B"}), lep("c")], {}, {},
     {"a": 0.0, "b": 0.65, "c": 0.8}),
    ("A", [lep("a", running={"B"}), lep("b")], {"a": ["A", "B"]}, {}, {"a": 0.9, "b": 0.8}),
    ("A", [lep("a", running={"B", "C"}), lep("b", running={"B", "C"})], {"a": ["A", "B"]}, {},
     {"a": 0.1, "b": 0.0}),
    ("A", [lep("a", inflight={"A": 1}), lep("b", others=3), lep("c", others=3)], {"b": ["A"]}, {},
     {"a": 1.0, "b": 0.3, "c": 0.2}),
    ("A", [lep("a"), lep("b")], {"a": ["B", "C"]}, {}, {"a": 0.5, "b": 0.8}),
    ("A", [lep("a", inflight={"A": 9}), lep("b", others=1), lep("c")], {}, {}, {"a": 1.0, "b": 0.8, "c": 0.8}),
    ("A", [lep("a", inflight={"A": 9}), lep("b", others=1), lep("c")], {}, {"maxReplicas": 1},
     {"a": 1.0, "b": 0.2, "c": 0.2}),
    ("A", [lep("a", inflight={"A": 1}), lep("b", others=5), lep("c", others=5)], {}, {"spread": 4.0},
     {"a": 1.0, "b": 0.8, "c": 0.8}),
    ("A", [lep("a", cap=0), lep("b", cap=0)], {"a": ["A"]}, {}, {"a": 0.9, "b": 0.8}),
    ("A", [lep("a", cap=0), lep("b", cap=0, running={"B", "C"})], {}, {"maxLoras": 2}, {"a": 0.8, "b": 0.0}),
]
IDS = ["no-adapter", "running", "in-flight-before-scrape", "waiting-behind-full", "waiting-with-room",
       "full-room-empty", "resident-idle", "full-but-resident",
       "resident-at-bound", "room-but-evicts", "hot-grows", "max-replicas", "spread",
       "unknown-cap", "param-cap"]


@pytest.mark.parametrize(("adapter", "eps", "mirror", "params", "want"), CASES, ids=IDS)
def test_formula(adapter: str | None, eps: list[Endpoint], mirror: dict[str, list[str]], params: dict[str, Any],
                 want: dict[str, float]) -> None:
    s = plugin(TYPE, params)
    for eid, names in mirror.items():
        for n in names:
            s._resident.setdefault(eid, {})[n] = None
    assert s.score(req("x", lora=adapter), eps) == pytest.approx(want)


def test_mirror_keeps_the_last_cap_adapters_per_endpoint() -> None:
    s = plugin(TYPE)
    e = lep("a", cap=2)
    for name in ["A", "B", "A", "C"]:
        s.pre_request(req("x", lora=name), SchedulingResult({"default": ProfileResult([e])}, "default"))
    assert list(s._resident["a"]) == ["A", "C"]
    s.endpoint_removed("a")
    assert s._resident == {}


CFG = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins: [{type: %s}, {type: queue-scorer}, {type: active-request-scorer}, {type: max-score-picker}]
schedulingProfiles:
- name: default
  plugins: [{pluginRef: %s, weight: %d}, {pluginRef: queue-scorer}, {pluginRef: active-request-scorer}]
"""


@pytest.mark.parametrize(("scorer", "weight", "fewest", "most"), [(TYPE, 4, 1, 2), ("lora-affinity-scorer", 4, 8, 8)],
                         ids=["placement-bounded", "lora-affinity-herds"])
def test_burst_of_a_new_adapter_over_a_busy_pool(scorer: str, weight: int, fewest: int, most: int) -> None:
    """20 requests of a new adapter arrive between two scrapes at 8 replicas that each carry 10 requests of
    their own adapter: the placement scorer keeps it on k = ceil(8 x 21/101) = 2 replicas; llm-d's
    lora-affinity sees free slots everywhere and the load scorers spread it to every replica."""
    eps = [lep(f"e{i}", cap=4, running={f"own{i}"}, inflight={f"own{i}": 10}) for i in range(8)]
    sched = scheduler(CFG % (scorer, scorer, weight))
    used: set[str] = set()
    for i in range(20):
        r = req("x", request_id=f"r{i}", lora="hot")
        res = sched.schedule(r, eps)
        sched.pre_request(r, res)
        LoadTicket(res.targets[0], 10, 1, "hot")
        used.add(res.targets[0].id)
    assert fewest <= len(used) <= most
