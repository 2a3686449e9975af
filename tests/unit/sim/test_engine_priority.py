"""``scheduling_policy="priority"`` (vLLM's --scheduling-policy priority) against the FCFS default."""

from __future__ import annotations

import pytest

from lanterna.sim.scheduler import make_waiting_queue

from .helpers import make_engine, req, run


def _finish_order(policy: str) -> list[str]:
    e = make_engine(max_num_seqs=1, scheduling_policy=policy)
    for rid, prio in (("a", 5), ("b", 0), ("c", 1), ("d", 0)):
        e.add_request(req(rid, list(range(ord(rid) * 10, ord(rid) * 10 + 8)), max_tokens=2, priority=prio))
    r = run(e)
    return [o.request_id for s in r.steps for o in s.outputs if o.finish_reason]


@pytest.mark.parametrize(("policy", "order"), [("fcfs", ["a", "b", "c", "d"]), ("priority", ["b", "d", "c", "a"])],
                         ids=["fcfs-arrival-order", "priority-lowest-value-first-then-arrival"])
def test_waiting_queue_order_follows_the_policy(policy: str, order: list[str]) -> None:
    assert _finish_order(policy) == order


def _tight_pair(policy: str) -> tuple[dict[str, int], list[str], list[int]]:
    """'low' (priority 1) is admitted first; 'high' (priority 0) needs a block at step 3, when none is free."""
    e = make_engine(num_gpu_blocks=5, scheduling_policy=policy)
    e.add_request(req("low", list(range(0, 8)), max_tokens=10, priority=1))
    e.add_request(req("high", list(range(50, 56)), max_tokens=10, priority=0))
    r = run(e)
    assert r.finish == {"low": "length", "high": "length"}
    assert e.stats().kv_cache_usage == 0.0
    step = next(s for s in r.steps if s.num_preemptions)
    preempted = {o.request_id: o.num_preemptions for o in r.outputs}
    return preempted, [o.request_id for o in step.outputs], [step.num_decode_tokens, step.num_preemptions]


def test_fcfs_preempts_the_last_admitted_request() -> None:
    preempted, outputs, shape = _tight_pair("fcfs")
    assert preempted == {"low": 0, "high": 1}
    assert outputs == ["low"] and shape == [1, 1]


def test_priority_preempts_the_lowest_priority_even_if_already_scheduled_this_step() -> None:
    # 'low' runs first in the list and was scheduled this step; 'high' then needs a block, so 'low'
    # is taken back out of the batch (its token budget returned) and preempted, as vLLM does.
    preempted, outputs, shape = _tight_pair("priority")
    assert preempted == {"low": 1, "high": 0}
    assert outputs == ["high"] and shape == [1, 1]


def test_priority_waiting_queue_iterates_in_key_order_and_supports_abort() -> None:
    e = make_engine(scheduling_policy="priority")
    for rid, prio in (("x", 2), ("y", 1)):
        e.add_request(req(rid, 8, priority=prio))
    assert [s.req.request_id for s in e.waiting] == ["y", "x"]
    assert e.abort_request("y") and [s.req.request_id for s in e.waiting] == ["x"]


def test_unknown_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="fcfs, priority"):
        make_waiting_queue("lifo")  # type: ignore[arg-type]
