"""Approximate prefix index (kvindex/approx.py) and the prefix-cache-scorer built on it."""

from __future__ import annotations

import pytest

from lanterna.kvindex.approx import ApproxPrefixIndex, chat_prefix_text
from lanterna.scheduler.framework.types import ProfileResult, SchedulingResult
from tests.unit.scheduler.helpers import ep, plugin, req


def _result(e):
    return SchedulingResult({"default": ProfileResult([e])}, "default")


@pytest.mark.parametrize(
    ("stored", "query", "want"),
    [("A" * 40, "A" * 40, 10), ("A" * 40, "A" * 20 + "B" * 20, 5), ("A" * 40, "B" * 40, 0),
     ("A" * 40, "A" * 39, 9), ("A" * 3, "A" * 3, 0)],
    ids=["full", "half", "none", "partial-block-ignored", "shorter-than-block"],
)
def test_match_counts_consecutive_blocks(stored, query, want):
    idx = ApproxPrefixIndex(block_chars=4, max_blocks=256, capacity_per_endpoint=100)
    idx.insert("a", idx.hashes("m", stored))
    assert idx.match(idx.hashes("m", query), ["a"]).get("a", 0) == want


def test_chain_stops_at_first_miss_even_if_later_blocks_exist():
    idx = ApproxPrefixIndex(block_chars=4)
    h = idx.hashes("m", "AAAABBBBCCCC")
    idx.insert("a", [h[0], h[2]])
    assert idx.match(h, ["a"]) == {"a": 1}


def test_seeded_by_model_and_salt():
    idx = ApproxPrefixIndex(block_chars=4)
    assert idx.hashes("m1", "AAAA") != idx.hashes("m2", "AAAA")
    assert idx.hashes("m", "AAAA", "s1") != idx.hashes("m", "AAAA", "s2")
    assert idx.hashes("m", "AAAA") == idx.hashes("m", "AAAA")


def test_max_blocks_caps_hashing():
    idx = ApproxPrefixIndex(block_chars=4, max_blocks=3)
    assert len(idx.hashes("m", "A" * 100)) == 3


def test_lru_capacity_bounds_memory_and_counts_evictions():
    idx = ApproxPrefixIndex(block_chars=4, capacity_per_endpoint=8)
    for i in range(10):
        idx.insert("a", idx.hashes("m", f"{i:04d}" * 4))  # 4 new blocks each time
        idx.insert("b", idx.hashes("m", f"{i:04d}" * 4))
    assert idx.num_entries("a") == 8 and idx.num_entries("b") == 8
    assert idx.num_evictions == 2 * (40 - 8)
    assert len(idx._owners) == 8  # evicted hashes leave the owner map too
    old, new = idx.hashes("m", "0000" * 4), idx.hashes("m", "0009" * 4)
    assert idx.match(old, ["a"]) == {} and idx.match(new, ["a", "b"]) == {"a": 4, "b": 4}
    idx.remove_endpoint("a")
    assert idx.num_entries() == 8 and idx.match(new, ["a", "b"]) == {"b": 4}


def test_only_candidates_are_matched():
    idx = ApproxPrefixIndex(block_chars=4)
    idx.insert("a", idx.hashes("m", "AAAABBBB"))
    assert idx.match(idx.hashes("m", "AAAABBBB"), ["b"]) == {}


def test_prefix_cache_scorer_inserts_at_pre_request():
    s = plugin("prefix-cache-scorer", {"blockSizeTokens": 1})  # 4-char blocks
    a, b = ep("a"), ep("b")
    r1 = req("AAAABBBBCCCCDDDD")
    s.produce(r1, [a, b])
    assert s.score(r1, [a, b]) == {"a": 0.0, "b": 0.0}
    s.pre_request(r1, _result(a))
    r2 = req("AAAABBBBXXXXYYYY")
    s.produce(r2, [a, b])
    assert s.score(r2, [a, b]) == {"a": 0.5, "b": 0.0}


def test_prefix_cache_scorer_legacy_block_size_in_chars():
    s = plugin("prefix-cache-scorer", {"hashBlockSize": 8})
    assert s.index.block_chars == 8


def test_chat_hashes_whole_conversation():
    """Two chats with the same system prompt but different histories match in proportion to what they share."""
    s = plugin("prefix-cache-scorer", {"blockSizeTokens": 4})
    a, b = ep("a"), ep("b")
    system = {"role": "system", "content": "You are a helpful assistant. " * 20}
    hist_a = [system] + [{"role": "user", "content": f"question {i} " * 30} for i in range(4)]
    hist_b = [system] + [{"role": "user", "content": f"other topic {i} " * 30} for i in range(4)]
    first = req(chat_prefix_text(hist_a), kind="chat")
    s.produce(first, [a, b])
    s.pre_request(first, _result(a))

    def ratio(messages):
        r = req(chat_prefix_text(messages), kind="chat")
        s.produce(r, [a, b])
        return s.score(r, [a, b])["a"]

    same = ratio(hist_a + [{"role": "user", "content": "more"}])
    half = ratio(hist_a[:3] + hist_b[3:])
    sys_only = ratio(hist_b)
    assert 0 < sys_only < half < same <= 1.0
    n_sys = len(chat_prefix_text([system])) // 16
    n_half = len(chat_prefix_text(hist_a[:3])) // 16
    total_b = len(chat_prefix_text(hist_b)) // 16
    assert sys_only == pytest.approx(n_sys / total_b, abs=1.5 / total_b)
    assert half == pytest.approx(n_half / (len(chat_prefix_text(hist_a[:3] + hist_b[3:])) // 16), abs=0.02)


def test_chat_prefix_text_is_prefix_stable():
    m = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert chat_prefix_text(m + [{"role": "assistant", "content": "x"}]).startswith(chat_prefix_text(m))


def test_unique_prompts_leave_the_index_at_its_bound_with_no_per_hash_containers():
    """Soak regression: each unique prompt adds a block; the owner map held a ``set`` per hash (466 bytes per
    entry in all, the gateway's linear RSS growth). It must stay at the LRU bound and hold plain int masks."""
    cap = 50
    idx = ApproxPrefixIndex(block_chars=4, capacity_per_endpoint=cap)
    for i in range(2000):
        idx.insert(f"ep{i % 3}", idx.hashes("m", f"{i:04d}" * 2))
    assert idx.num_entries() == 3 * cap and len(idx._owners) <= 3 * cap
    assert all(type(m) is int for m in idx._owners.values())


def test_endpoint_slots_are_reused_and_matches_end_per_endpoint():
    idx = ApproxPrefixIndex(block_chars=4)
    h = idx.hashes("m", "AAAABBBBCCCC")
    idx.insert("a", h)
    idx.insert("b", h[:2])
    idx.insert("c", h[:1])
    assert idx.match(h, ["a", "b", "c", "unknown"]) == {"a": 3, "b": 2, "c": 1}
    for n in range(20):  # endpoints come and go: slots (bits) are recycled, the masks stay small
        idx.insert(f"x{n}", h)
        idx.remove_endpoint(f"x{n}")
    assert len(idx._eids) == 4 and idx.match(h, ["a", "b", "c"]) == {"a": 3, "b": 2, "c": 1}
    idx.remove_endpoint("b")
    idx.insert("d", h[:2])  # takes b's freed slot; must not inherit b's hashes
    assert idx.match(h, ["a", "b", "c", "d"]) == {"a": 3, "c": 1, "d": 2}
    assert idx._owners[h[2]] == idx._slots["a"]
