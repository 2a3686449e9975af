"""Tokens for routing: the model's HF tokenizer + chat template, off the event loop, with a cache.

Why threads, not processes: HF ``tokenizers`` encodes in Rust with the GIL released, so a thread
pool runs encodes in parallel without pickling tokenizers into workers; the jinja2 render of a chat
template is short. Repeated prompts (system prompts, multi-turn chats resending history, retries) hit
an LRU cache keyed on the exact prompt, bounded by entries and total tokens. Models without a local
tokenizer can use the model server's ``POST /tokenize``; with neither, ``None`` comes back and
``num_fallbacks`` counts it (the scheduler then relies on the approximate text index).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from lanterna.kvindex.hashing import TokenIds

log = logging.getLogger(__name__)

Messages = Sequence[Mapping[str, Any]]


@dataclass(slots=True)
class TokenizerCounters:
    num_requests: int = 0
    num_cache_hits: int = 0
    num_fallbacks: int = 0  # no tokenizer (or it failed): the caller routes on the approximate index
    num_remote: int = 0
    tokenize_s_total: float = 0.0


class _LRU:
    """Prompt -> tokens, bounded by ``max_entries`` and ``max_tokens`` (memory)."""

    def __init__(self, max_entries: int, max_tokens: int) -> None:
        self._d: OrderedDict[Any, list[int]] = OrderedDict()
        self._max_entries, self._max_tokens, self._tokens = max_entries, max_tokens, 0

    def get(self, key: Any) -> list[int] | None:
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key: Any, value: list[int]) -> None:
        if len(value) > self._max_tokens or key in self._d:
            return
        self._d[key] = value
        self._tokens += len(value)
        while len(self._d) > self._max_entries or self._tokens > self._max_tokens:
            _, old = self._d.popitem(last=False)
            self._tokens -= len(old)

    def __len__(self) -> int:
        return len(self._d)


RemoteTokenize = Callable[[str, dict[str, Any]], Any]  # async (model, body) -> list[int] | None


class TokenizerPool:
    """``await tokenize_prompt(model, prompt)`` / ``await tokenize_chat(model, messages)`` -> ids or None.

    Args:
        tokenizer_dirs: model name -> tokenizer dir (``None``: Lanterna's default tokenizer).
        remote: optional async ``(model, body)`` client for a model server's ``/tokenize``, used for
            models without a local tokenizer (see ``http_tokenize``).
        token_array: return ``array('I')`` built in the worker thread instead of a list: the scorer
            then hashes it without converting on the event loop (32k tokens: ~0.3 ms saved).
        clock: a callable returning monotonic seconds, for the tokenize-time counter (default: none).
    """

    def __init__(
        self,
        tokenizer_dirs: Mapping[str, str | Path | None],
        *,
        workers: int = 2,
        cache_entries: int = 4096,
        cache_tokens: int = 8_000_000,
        remote: RemoteTokenize | None = None,
        clock: Callable[[], float] | None = None,
        token_array: bool = False,
    ) -> None:
        self._token_array = token_array
        self._dirs = dict(tokenizer_dirs)
        self._toks: dict[str, Any] = {}
        self._loading: dict[str, asyncio.Future[Any]] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tokenize")
        self._cache = _LRU(cache_entries, cache_tokens)
        self._remote = remote
        self._clock = clock
        self.counters = TokenizerCounters()

    def has_tokenizer(self, model: str) -> bool:
        return model in self._dirs

    async def _tokenizer(self, model: str) -> Any | None:
        tok = self._toks.get(model)
        if tok is not None or model not in self._dirs:
            return tok
        fut = self._loading.get(model)
        if fut is None:
            from lanterna.models.tokenizer import load_tokenizer

            loop = asyncio.get_running_loop()
            fut = self._loading[model] = asyncio.ensure_future(
                loop.run_in_executor(self._pool, load_tokenizer, self._dirs[model])
            )
        try:
            tok = await fut
        except (OSError, ValueError) as exc:
            log.warning("tokenizer_load_failed", extra={"model": model, "error": str(exc)})
            self._dirs.pop(model, None)
            return None
        self._toks[model] = tok
        return tok

    async def tokenize_prompt(self, model: str, prompt: Any) -> list[int] | None:
        """Completions prompt: a string (encoded with special tokens, as vLLM does) or token ids."""
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return prompt
        if not isinstance(prompt, str):
            return None
        return await self._run(model, ("p", model, prompt), "encode", (prompt,), {"prompt": prompt})

    async def tokenize_chat(self, model: str, messages: Messages) -> list[int] | None:
        """Chat messages: template rendered, then encoded without special tokens (vLLM's chat path)."""
        try:
            key = ("c", model, msgspec.json.encode(messages))
        except (TypeError, msgspec.EncodeError):
            return None
        return await self._run(model, key, "encode_chat", (messages,), {"messages": list(messages)})

    async def _run(self, model: str, key: Any, method: str, args: tuple[Any, ...], body: dict[str, Any]) -> list[int] | None:
        self.counters.num_requests += 1
        hit = self._cache.get(key)
        if hit is not None:
            self.counters.num_cache_hits += 1
            return hit
        t0 = self._clock() if self._clock else 0.0
        ids: list[int] | None = None
        tok = await self._tokenizer(model)
        if tok is not None:
            try:
                ids = await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._encode, getattr(tok, method), args
                )
            except Exception as exc:  # a template error must not fail the request: fall back
                log.warning("tokenize_failed", extra={"model": model, "error": str(exc)})
        elif self._remote is not None:
            self.counters.num_remote += 1
            ids = await self._remote(model, {"model": model, **body})
        if self._clock:
            self.counters.tokenize_s_total += self._clock() - t0
        if ids is None:
            self.counters.num_fallbacks += 1
            return None
        self._cache.put(key, ids)
        return ids

    def _encode(self, fn: Callable[..., list[int]], args: tuple[Any, ...]) -> list[int]:
        ids = fn(*args)
        # TokenIds: an array('I') carrying its canonical block bytes (Canon), built here, off the loop
        return TokenIds.of(ids) if self._token_array else ids  # type: ignore[return-value]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
