"""Workload generators: lengths, prefix sharing, determinism, trace parsing; load schedules."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from lanterna.bench.config import (
    MultiTurnWorkload,
    RandomWorkload,
    SharedPrefixWorkload,
    Stage,
    Sweep,
    TraceWorkload,
)
from lanterna.bench.load import arrival_offsets, is_saturated, sweep_rates
from lanterna.bench.workloads import iter_workload


def _take(it, n):  # type: ignore[no-untyped-def]
    return list(itertools.islice(it, n))


def test_shared_prefix_lengths_and_sharing() -> None:
    cfg = SharedPrefixWorkload(num_groups=3, prompts_per_group=4, system_len=64, question_len=16, output_len=7)
    items = _take(iter_workload(cfg, seed=1), 24)
    assert all(len(it.token_ids()) == 80 and it.output_len == 7 for it in items)
    first_pass = items[:12]
    assert sorted((it.group, it.segments[1].key) for it in first_pass) == sorted(
        (g, f"q{g}.{p}") for g in range(3) for p in range(4)
    )  # every prompt exactly once per pass
    by_group: dict[int, list[list[int]]] = {}
    for it in first_pass:
        by_group.setdefault(it.group, []).append(it.token_ids())
    for _g, prompts in by_group.items():
        assert all(p[:64] == prompts[0][:64] for p in prompts)  # shared system prompt
        assert len({tuple(p[64:]) for p in prompts}) == 4  # distinct questions
    assert by_group[0][0][:64] != by_group[1][0][:64]


def test_same_seed_same_prompts_other_seed_differs() -> None:
    cfg = SharedPrefixWorkload(num_groups=2, prompts_per_group=2, system_len=8, question_len=8, output_len=1)
    a = [it.token_ids() for it in _take(iter_workload(cfg, 5), 8)]
    b = [it.token_ids() for it in _take(iter_workload(cfg, 5), 8)]
    c = [it.token_ids() for it in _take(iter_workload(cfg, 6), 8)]
    assert a == b and a != c


def test_random_lengths_within_range() -> None:
    cfg = RandomWorkload(input_len=100, output_len=50, range_ratio=0.2, num_prompts=200)
    items = _take(iter_workload(cfg, 0), 200)
    assert all(80 <= it.num_prompt_tokens <= 120 and 40 <= it.output_len <= 60 for it in items)
    assert len({it.num_prompt_tokens for it in items}) > 10


def test_multi_turn_history_grows_and_is_prefix() -> None:
    cfg = MultiTurnWorkload(num_users=2, num_rounds=3, system_len=10, question_len=5, output_len=4)
    items = _take(iter_workload(cfg, 0), 6)
    u0 = [it for it in items if it.group == 0]
    assert [it.num_prompt_tokens for it in u0] == [15, 24, 33]
    assert u0[1].token_ids()[:15] == u0[0].token_ids()
    assert u0[2].token_ids()[:24] == u0[1].token_ids()
    assert items[0].token_ids()[:10] == items[1].token_ids()[:10]  # shared system prompt
    assert [s.role for s in u0[1].segments] == ["system", "user", "assistant", "user"]


def test_trace_mooncake_blocks_share_tokens(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = [
        {"timestamp": 1000, "input_length": 20, "output_length": 3, "hash_ids": [7, 8, 9]},
        {"timestamp": 1500, "input_length": 16, "output_length": 2, "hash_ids": [7, 8]},
        {"timestamp": 2500, "input_length": 12, "output_length": 1, "hash_ids": [5]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = list(iter_workload(TraceWorkload(path=path, block_tokens=8), 0))
    assert [it.num_prompt_tokens for it in items] == [20, 16, 12]
    assert [it.arrival_s for it in items] == [0.0, 0.5, 1.5]
    assert items[0].token_ids()[:16] == items[1].token_ids()
    assert items[2].token_ids()[:8] != items[0].token_ids()[:8]


def test_trace_bad_record_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"timestamp": 1, "input_length": 2, "output_length": 1}\n{"timestamp": 2}\n')
    with pytest.raises(ValueError, match=":2: bad trace record"):
        list(iter_workload(TraceWorkload(path=path), 0))


@pytest.mark.parametrize("kind", ["constant", "poisson"])
def test_schedules_hit_the_requested_rate(kind: str) -> None:
    offs = list(arrival_offsets(Stage(rate=50.0, duration_s=100.0), kind, random.Random(3)))
    assert offs == sorted(offs) and offs[0] == 0.0 and offs[-1] < 100.0
    assert len(offs) == pytest.approx(5000, rel=0.05)
    assert len(list(arrival_offsets(Stage(rate=50.0, num_requests=7), kind, random.Random(3)))) == 7


def test_constant_schedule_is_exact() -> None:
    assert list(arrival_offsets(Stage(rate=4.0, duration_s=1.0), "constant", random.Random(0))) == [0, 0.25, 0.5, 0.75]


def test_sweep_ladder_and_saturation() -> None:
    sw = Sweep(start_rate=1, max_rate=8, factor=2, min_gain=0.05)
    assert sweep_rates(sw) == [1, 2, 4, 8]
    assert not is_saturated(None, 100.0, 0.1, sw)
    assert not is_saturated(100.0, 150.0, 0.1, sw)
    assert is_saturated(100.0, 102.0, 0.1, sw)
    assert is_saturated(None, 100.0, 9.0, Sweep(max_ttft_p50_s=5.0))
