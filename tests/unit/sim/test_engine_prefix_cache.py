"""Prefix-cache hit rules: whole blocks, last token recomputed, LoRA and salt isolation, counters."""

from __future__ import annotations

import pytest

from .helpers import make_engine, req, run

PROMPT = list(range(1000, 1016))  # 16 tokens = 4 blocks of 4


@pytest.mark.parametrize(
    ("second_prompt", "expected_cached"),
    [
        (PROMPT, 12),  # identical: the last token is recomputed, so its whole block is not a hit
        (PROMPT + [7, 8], 16),  # longer: all 4 full blocks hit
        (PROMPT[:10] + [1, 2, 3, 4, 5, 6], 8),  # diverges inside block 3: whole blocks only
        ([999] + PROMPT[1:], 0),  # first token differs: chain broken from the start
        (PROMPT[:3], 0),  # shorter than a block
    ],
    ids=["identical", "longer", "diverges-mid-block", "first-token-differs", "sub-block"],
)
def test_hit_is_longest_chain_of_whole_blocks_below_last_token(
    second_prompt: list[int], expected_cached: int
) -> None:
    e = make_engine()
    e.add_request(req("a", PROMPT, max_tokens=1))
    run(e)
    e.add_request(req("b", second_prompt, max_tokens=1))
    r = run(e)
    assert r.cached["b"] == expected_cached
    st = e.stats()
    assert st.prefix_cache_queries == len(PROMPT) + len(second_prompt)
    assert st.prefix_cache_hits == expected_cached


@pytest.mark.parametrize(
    ("first", "second", "hit"),
    [
        ({"lora_name": "l1"}, {"lora_name": "l1"}, True),
        ({"lora_name": "l1"}, {}, False),
        ({"lora_name": "l1"}, {"lora_name": "l2"}, False),
        ({"cache_salt": "s"}, {"cache_salt": "s"}, True),
        ({"cache_salt": "s"}, {"cache_salt": "t"}, False),
        ({}, {"cache_salt": "s"}, False),
    ],
    ids=["same-lora", "lora-vs-base", "two-loras", "same-salt", "two-salts", "salt-vs-none"],
)
def test_lora_and_cache_salt_isolate_blocks(first: dict[str, str], second: dict[str, str], hit: bool) -> None:
    e = make_engine()
    e.add_request(req("a", PROMPT, max_tokens=1, **first))
    run(e)
    e.add_request(req("b", PROMPT + [1], max_tokens=1, **second))
    assert run(e).cached["b"] == (16 if hit else 0)


def test_output_blocks_are_cached_when_they_fill() -> None:
    e = make_engine()
    e.add_request(req("a", PROMPT, max_tokens=9))
    out = run(e).tokens["a"]
    # a computed its prompt plus 8 of its 9 outputs: 24 tokens = 6 full blocks
    e.add_request(req("b", PROMPT + out + [5], max_tokens=1))
    assert run(e).cached["b"] == 24


def test_concurrent_requests_with_shared_prefix_share_blocks() -> None:
    e = make_engine(max_num_batched_tokens=16)
    e.add_request(req("a", PROMPT + [1, 2, 3, 4], max_tokens=3))
    e.step(0.0)  # a's first 16 tokens computed and cached
    e.add_request(req("b", PROMPT + [9, 9, 9, 9], max_tokens=3))
    r = run(e)
    assert r.cached["b"] == 16


def test_disabled_prefix_caching_never_hits_or_emits() -> None:
    e = make_engine(enable_prefix_caching=False)
    e.add_request(req("a", PROMPT, max_tokens=1))
    e.add_request(req("b", PROMPT + [1], max_tokens=1))
    r = run(e)
    assert r.cached == {"a": 0, "b": 0}
    assert r.events == []


def test_matches_the_real_vllm_prefix_experiment() -> None:
    # reference/vllm-0.32-cpu/prefix_experiment.out: block 32, 120-token prompt seen twice -> 96 cached,
    # the same prompt under a LoRA adapter -> 0 cached
    e = make_engine(block_size=32, num_gpu_blocks=64, max_num_batched_tokens=2048)
    prompt = list(range(5000, 5120))
    e.add_request(req("A", prompt, max_tokens=10))
    run(e)
    e.add_request(req("B", prompt, max_tokens=10))
    e.add_request(req("B_again", prompt, max_tokens=10))
    r = run(e)
    e.add_request(req("A_lora", prompt, max_tokens=10, lora_name="lora1"))
    r = run(e, into=r)
    assert r.cached == {"B": 96, "B_again": 96, "A_lora": 0}
