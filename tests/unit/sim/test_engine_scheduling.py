"""vLLM V1 scheduling semantics: token budget, chunked prefill, seats, preemption, finishing."""

from __future__ import annotations

import pytest

from lanterna.protocol.kv_events import BlockRemoved, BlockStored
from lanterna.sim.engine import Engine, EngineConfig
from lanterna.sim.timing import BatchShape

from .helpers import make_engine, req, run


def test_chunked_prefill_respects_token_budget_and_samples_on_last_chunk() -> None:
    e = make_engine(max_num_batched_tokens=16)
    e.add_request(req("a", 40, max_tokens=3))
    r = run(e)
    assert [s.num_prefill_tokens for s in r.steps[:3]] == [16, 16, 8]
    assert [len(s.outputs) for s in r.steps[:3]] == [0, 0, 1]
    assert r.steps[2].outputs[0].first_token
    assert len(r.steps) == 5 and r.finish == {"a": "length"} and len(r.tokens["a"]) == 3


def test_running_requests_are_scheduled_before_waiting_ones() -> None:
    e = make_engine(max_num_batched_tokens=16)
    e.add_request(req("a", 8, max_tokens=5))
    e.step(0.0)  # a prefilled, now decoding
    e.add_request(req("b", list(range(500, 540)), max_tokens=1))
    out = e.step(0.01)
    assert out.num_decode_tokens == 1  # a's decode went first
    assert out.num_prefill_tokens == 15  # b got what was left of the budget


def test_seat_limit_caps_running_requests() -> None:
    e = make_engine(max_num_seqs=2)
    for i in range(3):
        e.add_request(req(f"r{i}", list(range(i * 100, i * 100 + 8)), max_tokens=3))
    out = e.step(0.0)
    assert e.stats().num_running == 2 and e.stats().num_waiting == 1
    assert {o.request_id for o in out.outputs} == {"r0", "r1"}
    r = run(e)
    assert set(r.finish) == {"r0", "r1", "r2"}


def test_preemption_under_a_tiny_pool_completes_everything_without_raising() -> None:
    # 8 blocks of 4 tokens; two requests that each grow to 4 blocks + cannot both fit
    e = make_engine(num_gpu_blocks=8, max_num_batched_tokens=64)
    e.add_request(req("a", list(range(0, 10)), max_tokens=12))
    e.add_request(req("b", list(range(50, 60)), max_tokens=12))
    r = run(e)
    assert r.finish == {"a": "length", "b": "length"}
    assert len(r.tokens["a"]) == 12 and len(r.tokens["b"]) == 12
    assert e.stats().num_preemptions >= 1
    assert sum(s.num_preemptions for s in r.steps) == e.stats().num_preemptions
    assert any(o.num_preemptions for o in r.outputs if o.request_id == "b")
    # events are consistent with the pool: stored - removed = what the pool still caches
    live: dict[int, int] = {}
    for ev in r.events:
        if isinstance(ev, BlockStored):
            for h in ev.block_hashes:
                live[int(h)] = live.get(int(h), 0) + 1
        elif isinstance(ev, BlockRemoved):
            for h in ev.block_hashes:
                assert live.get(int(h), 0) > 0, "removed a block never stored"
                live[int(h)] -= 1
    cached = {h: len(bs) for h, bs in e.pool.cached.items()}
    assert {h: n for h, n in live.items() if n} == cached
    assert e.stats().kv_cache_usage == 0.0


def test_preempted_request_goes_to_front_of_waiting_and_blocks_admission_that_step() -> None:
    e = make_engine(num_gpu_blocks=6, max_num_batched_tokens=64)
    e.add_request(req("a", list(range(0, 8)), max_tokens=20))
    e.add_request(req("b", list(range(50, 58)), max_tokens=20))
    e.step(0.0)
    e.add_request(req("c", list(range(90, 94)), max_tokens=1))
    for _ in range(20):
        out = e.step(0.0)
        if out.num_preemptions:
            break
    else:
        pytest.fail("no preemption")
    assert [s.req.request_id for s in e.waiting] == ["b", "c"]
    assert e.stats().num_running == 1


def test_request_that_can_never_fit_is_aborted_not_raised() -> None:
    e = make_engine(num_gpu_blocks=4)
    e.add_request(req("huge", 40))
    e.add_request(req("grows", list(range(200, 212)), max_tokens=50))  # prompt fits, decode cannot
    r = run(e)
    assert r.finish == {"huge": "abort", "grows": "abort"}
    assert e.stats().kv_cache_usage == 0.0


def test_abort_frees_blocks_and_stops_outputs() -> None:
    e = make_engine()
    e.add_request(req("a", 8, max_tokens=100))
    e.add_request(req("w", 8, max_tokens=100))
    e.step(0.0)
    assert e.stats().kv_cache_usage > 0
    assert e.abort_request("a") and e.abort_request("w")
    assert not e.abort_request("a") and not e.abort_request("nope")
    assert e.stats().kv_cache_usage == 0.0
    assert not e.has_work() or not any(o.request_id == "a" for o in e.step(0.1).outputs)


def test_same_seed_gives_identical_outputs_and_a_different_seed_does_not() -> None:
    def tokens(seed: int) -> dict[str, list[int]]:
        e = make_engine(seed=seed, num_gpu_blocks=10)
        for i in range(4):
            e.add_request(req(f"r{i}", list(range(i, i + 9)), max_tokens=15))
        return run(e).tokens

    assert tokens(1) == tokens(1)
    assert tokens(1) != tokens(2)


def test_request_seed_makes_tokens_independent_of_request_id() -> None:
    e = make_engine()
    e.add_request(req("x", 8, max_tokens=6, seed=42))
    e.add_request(req("y", 8, max_tokens=6, seed=42))
    r = run(e)
    assert r.tokens["x"] == r.tokens["y"]


def test_eos_stops_after_min_tokens_when_not_ignored() -> None:
    e = make_engine(eos_probability=1.0)
    e.add_request(req("s", 8, max_tokens=50, ignore_eos=False, eos_token_id=2, min_tokens=3))
    e.add_request(req("i", 8, max_tokens=5, ignore_eos=True, eos_token_id=2))
    r = run(e)
    assert r.finish == {"s": "stop", "i": "length"}
    assert len(r.tokens["s"]) == 4 and r.tokens["s"][-1] == 2


def test_max_model_len_cuts_output_with_length() -> None:
    e = make_engine(max_model_len=20)
    e.add_request(req("a", 16, max_tokens=100))
    r = run(e)
    assert r.finish == {"a": "length"}
    assert 16 + len(r.tokens["a"]) == 20


def test_stats_count_prompt_and_generation_tokens() -> None:
    e = make_engine()
    e.add_request(req("a", 10, max_tokens=3))
    e.add_request(req("b", list(range(300, 306)), max_tokens=2))
    run(e)
    st = e.stats()
    assert (st.num_prompt_tokens, st.num_generation_tokens) == (16, 5)
    assert (st.num_running, st.num_waiting, st.block_size, st.num_gpu_blocks) == (0, 0, 4, 64)


def test_same_seed_reproduces_events_and_durations_exactly() -> None:
    def trace(seed: int) -> tuple[list[object], list[float]]:
        e = make_engine(seed=seed, num_gpu_blocks=12, max_num_batched_tokens=8)
        for i in range(5):
            e.add_request(req(f"r{i}", list(range(i % 2, i % 2 + 13)), max_tokens=7))
        r = run(e)
        return r.events, [s.duration_s for s in r.steps]

    assert trace(3) == trace(3)


def test_engine_describes_each_batch_to_the_timer() -> None:
    shapes: list[BatchShape] = []

    class Recorder:
        def step_time(self, batch: BatchShape) -> float:
            shapes.append(batch)
            return 0.01

    e = Engine(EngineConfig(block_size=4, num_gpu_blocks=64, max_num_batched_tokens=16), Recorder())
    e.add_request(req("a", 20, max_tokens=3))
    run(e)
    assert [(s.prefill_chunks, s.decode_contexts, s.num_prefill_sampled) for s in shapes] == [
        ([(16, 0)], [], 0),
        ([(4, 16)], [], 1),
        ([], [21], 0),
        ([], [22], 0),
    ]


def test_eos_length_is_geometric_after_min_tokens() -> None:
    # EOS is decided once per request (a geometric draw), which must match a per-token coin of p = 0.25:
    # mean outputs = min_tokens + 1 / p = 2 + 4.
    e = make_engine(eos_probability=0.25, num_gpu_blocks=4096)
    for i in range(400):
        e.add_request(req(f"r{i}", list(range(i * 8, i * 8 + 8)), max_tokens=10_000, ignore_eos=False,
                          eos_token_id=7, min_tokens=2))
    r = run(e, max_steps=100_000)
    lengths = [len(t) for t in r.tokens.values()]
    assert set(r.finish.values()) == {"stop"} and min(lengths) >= 3
    assert all(t[-1] == 7 for t in r.tokens.values())
    assert 5.5 < sum(lengths) / len(lengths) < 6.5


def test_compact_outputs_report_middle_tokens_as_ids_with_the_same_counts() -> None:
    def go(compact: bool) -> tuple[list[list[tuple[str, bool, str | None]]], list[list[str]], int]:
        e = make_engine(compact_outputs=compact, max_num_batched_tokens=16)
        for i in range(3):
            e.add_request(req(f"r{i}", list(range(i * 50, i * 50 + 10)), max_tokens=4 + i))
        outs, ids = [], []
        while e.has_work():
            o = e.step(0.0)
            outs.append([(x.request_id, x.first_token, x.finish_reason) for x in o.outputs])
            ids.append(list(getattr(o, "decoded", [])))
        return outs, ids, e.stats().num_generation_tokens

    full, none, n_full = go(False)
    compact, ids, n_compact = go(True)
    assert not any(none) and n_full == n_compact == 4 + 5 + 6
    # compact keeps first and last tokens as RequestTokens; every other token becomes an id, same step
    merged = [sorted([r for r, _, _ in c] + i) for c, i in zip(compact, ids, strict=True)]
    assert merged == [sorted(r for r, _, _ in f) for f in full]
    assert all(first or reason for step in compact for _, first, reason in step)
