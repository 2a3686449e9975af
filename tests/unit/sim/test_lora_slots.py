"""LoRA slots: LRU eviction of idle adapters only, load cost on a miss, the per-batch adapter limit."""

from __future__ import annotations

import pytest

from lanterna.sim.lora_slots import LoraLoadCost, LoraSlots, adapter_bytes

# (operations, resident LRU-first after them, loads, evictions, total load seconds) with max_loras 2, load 0.5 s.
# "+a": a request for a starts running; "-a": one stops.
CASES = [
    (["+a"], ["a"], 1, 0, 0.5),
    (["+a", "+a"], ["a"], 1, 0, 0.5),
    (["+a", "+b"], ["a", "b"], 2, 0, 1.0),
    (["+a", "+b", "-a", "+c"], ["b", "c"], 3, 1, 1.5),
    (["+a", "+b", "-b", "+c"], ["a", "c"], 3, 1, 1.5),  # b idle, a running: b is the victim, not the LRU a
    (["+a", "+b", "-a", "-b", "+a", "-a", "+c"], ["a", "c"], 3, 1, 1.5),  # a touched again: b is the LRU
    (["+a", "-a", "+a"], ["a"], 1, 0, 0.5),  # still resident after stopping: free
]


@pytest.mark.parametrize(("ops", "resident", "loads", "evictions", "cost"), CASES,
                         ids=["one", "same-twice", "two", "evict-lru", "evict-idle-not-lru", "touch", "stays"])
def test_slot_lru(ops: list[str], resident: list[str], loads: int, evictions: int, cost: float) -> None:
    s = LoraSlots(2, load_s=0.5)
    total = 0.0
    for op in ops:
        if op[0] == "+":
            assert s.can_run(op[1:])
            total += s.start(op[1:])
        else:
            s.stop(op[1:])
    assert (s.resident(), s.num_loads, s.num_evictions, total) == (resident, loads, evictions, cost)


def test_can_run_bounds_distinct_adapters_per_batch() -> None:
    s = LoraSlots(2)
    s.start("a")
    s.start("b")
    assert (s.can_run("a"), s.can_run("b"), s.can_run("c")) == (True, True, False)
    s.stop("a")
    assert s.can_run("c")
    assert s.running() == ["b"]


def test_invalid_max_loras() -> None:
    with pytest.raises(ValueError, match="max_loras"):
        LoraSlots(0)


def test_load_cost_from_size_and_bandwidth() -> None:
    # Llama-3.1-8B shape, rank 16: 16 x 81920 x 32 layers x 2 bytes = 83.9 MB
    n = adapter_bytes(16, hidden_size=4096, intermediate_size=14336, kv_dim=1024, num_layers=32)
    assert n == 16 * 81920 * 32 * 2
    assert LoraLoadCost(n, bandwidth_bps=2e9, overhead_s=0.005).load_s == pytest.approx(0.005 + n / 2e9)
    assert LoraLoadCost(0, overhead_s=0.02).load_s == 0.02
