"""TokenizerPool: same ids as the tokenizer, cached, fallback counted, /tokenize alternative."""

from __future__ import annotations

from typing import Any

import pytest

from lanterna.kvindex.tokenization import _LRU, TokenizerPool
from lanterna.models.tokenizer import load_tokenizer

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]


async def test_matches_tokenizer_and_caches() -> None:
    tok = load_tokenizer(None)
    pool = TokenizerPool({"tiny": None})
    try:
        assert await pool.tokenize_prompt("tiny", "hello world") == tok.encode("hello world")
        assert await pool.tokenize_chat("tiny", MSGS) == tok.encode_chat(MSGS)
        assert await pool.tokenize_chat("tiny", MSGS) == tok.encode_chat(MSGS)
        assert pool.counters.num_cache_hits == 1
        assert await pool.tokenize_prompt("tiny", [5, 6, 7]) == [5, 6, 7]
    finally:
        pool.close()


async def test_fallback_counted_and_remote_used() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    async def remote(model: str, body: dict[str, Any]) -> list[int] | None:
        calls.append((model, body))
        return [1, 2, 3] if model == "served" else None

    pool = TokenizerPool({}, remote=remote)
    try:
        assert await pool.tokenize_prompt("served", "x") == [1, 2, 3]
        assert await pool.tokenize_prompt("ghost", "x") is None
        assert calls[0] == ("served", {"model": "served", "prompt": "x"})
        assert pool.counters.num_fallbacks == 1 and pool.counters.num_remote == 2
    finally:
        pool.close()


async def test_missing_tokenizer_dir_falls_back(tmp_path: Any) -> None:
    pool = TokenizerPool({"m": tmp_path})
    try:
        assert await pool.tokenize_prompt("m", "x") is None
        assert pool.counters.num_fallbacks == 1
    finally:
        pool.close()


@pytest.mark.parametrize(("entries", "tokens", "left"), [(2, 100, 2), (10, 5, 1)], ids=["by-entries", "by-tokens"])
def test_cache_is_bounded(entries: int, tokens: int, left: int) -> None:
    c = _LRU(entries, tokens)
    for i in range(5):
        c.put(i, [i] * 3)
    assert len(c) == left and c.get(4) == [4, 4, 4]


async def test_token_array_option_gives_same_ids() -> None:
    from array import array

    pool = TokenizerPool({"tiny": None}, token_array=True)
    try:
        ids = await pool.tokenize_prompt("tiny", "hello world")
        assert isinstance(ids, array) and list(ids) == load_tokenizer(None).encode("hello world")
    finally:
        pool.close()
