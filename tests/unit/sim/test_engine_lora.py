"""The engine under ``max_loras``: the per-batch adapter limit (skip, not head-of-line block), swap cost in the
step time, slots and ``lora_requests_info`` state in ``stats()``."""

from __future__ import annotations

from .helpers import make_engine, req, run


def test_adapter_beyond_max_loras_is_skipped_not_blocking() -> None:
    e = make_engine(max_loras=2)
    e.add_request(req("a", 4, max_tokens=3, lora_name="a"))
    e.add_request(req("b", 4, max_tokens=3, lora_name="b"))
    e.add_request(req("c", 4, max_tokens=3, lora_name="c"))  # a third adapter: waits
    e.add_request(req("a2", 4, max_tokens=3, lora_name="a"))  # behind c, but its adapter runs: admitted
    e.add_request(req("base", 4, max_tokens=3))  # no adapter: never limited
    e.step(0.0)
    assert sorted(s.rid for s in e.running) == ["a", "a2", "b", "base"]
    st = e.stats()
    assert (st.max_loras, st.running_lora_adapters, st.waiting_lora_adapters) == (2, ["a", "b"], ["c"])
    r = run(e)
    assert r.finish["c"] == "length"
    assert e.stats().num_lora_loads == 3 and e.stats().num_lora_evictions == 1


def test_skipped_requests_keep_their_order_at_the_head() -> None:
    e = make_engine(max_loras=1)
    for rid, a in [("a", "a"), ("b1", "b"), ("c", "c"), ("b2", "b")]:
        e.add_request(req(rid, 4, max_tokens=2, lora_name=a))
    e.step(0.0)
    assert [s.rid for s in e.waiting] == ["b1", "c", "b2"]


def test_swap_cost_is_added_to_the_step_once_per_load() -> None:
    e = make_engine(max_loras=2, lora_load_s=0.25)
    e.add_request(req("a", 4, max_tokens=2, lora_name="a"))
    e.add_request(req("b", 4, max_tokens=2, lora_name="b"))
    first = e.step(0.0)
    assert first.duration_s == 0.01 + 0.5  # ConstantTimer 10 ms + two loads
    run(e)
    e.add_request(req("a2", 4, max_tokens=1, lora_name="a"))  # resident: free
    assert e.step(1.0).duration_s == 0.01
    e.add_request(req("c", 4, max_tokens=1, lora_name="c"))  # evicts the idle LRU (b), pays one load
    assert e.step(2.0).duration_s == 0.01 + 0.25
    assert e.lora is not None and e.lora.resident() == ["a", "c"]


def test_preemption_releases_the_adapter_slot() -> None:
    """A tiny pool forces preemptions; at every step the running adapters are exactly those of running requests."""
    e = make_engine(max_loras=2, num_gpu_blocks=8)
    for rid, a in [("a", "x"), ("b", "y"), ("c", "z")]:
        e.add_request(req(rid, 4, max_tokens=24, lora_name=a))
    now, preempted = 0.0, 0
    while e.has_work():
        out = e.step(now)
        now += out.duration_s
        preempted += out.num_preemptions
        st = e.stats()
        assert sorted(st.running_lora_adapters) == sorted({s.req.lora_name for s in e.running})
        assert len(st.running_lora_adapters) <= 2
    assert preempted > 0


def test_abort_releases_the_adapter() -> None:
    e = make_engine(max_loras=1)
    e.add_request(req("a", 4, max_tokens=50, lora_name="a"))
    e.add_request(req("b", 4, max_tokens=1, lora_name="b"))
    e.step(0.0)
    assert e.stats().running_lora_adapters == ["a"]
    assert e.abort_request("a")
    assert e.stats().running_lora_adapters == []
    assert run(e).finish == {"b": "length"}


def test_without_max_loras_adapters_are_unlimited_and_free() -> None:
    e = make_engine()
    for i in range(5):
        e.add_request(req(f"r{i}", 4, max_tokens=1, lora_name=f"l{i}"))
    assert e.step(0.0).duration_s == 0.01
    assert len(e.running) == 0 and e.stats().running_lora_adapters == []  # all finished in one step
