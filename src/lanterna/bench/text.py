"""Token segments -> text for HTTP targets, rendered once per segment so shared prefixes stay shared.

Decoding each segment separately (not the concatenation) keeps a group's system prompt byte-identical
in every request, which is what prefix caches and text-based routers key on. Bounded LRU cache.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

from lanterna.bench.workloads import Segment, WorkItem


class _Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


class TextRenderer:
    def __init__(self, tokenizer: _Decoder | None = None, capacity: int = 8192) -> None:
        if tokenizer is None:
            from lanterna.models.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(None)
        self._tok = tokenizer
        self._cap = capacity
        self._cache: OrderedDict[str, str] = OrderedDict()

    def segment(self, seg: Segment) -> str:
        text = self._cache.get(seg.key)
        if text is None:
            text = self._tok.decode(seg.tokens.tolist())
            self._cache[seg.key] = text
            if len(self._cache) > self._cap:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(seg.key)
        return text

    def prompt(self, item: WorkItem) -> str:
        return "".join(self.segment(s) for s in item.segments)

    def messages(self, item: WorkItem) -> list[dict[str, Any]]:
        """Chat messages: consecutive segments with the same role merge into one message."""
        out: list[dict[str, Any]] = []
        for s in item.segments:
            if out and out[-1]["role"] == s.role:
                out[-1]["content"] += self.segment(s)
            else:
                out.append({"role": s.role, "content": self.segment(s)})
        return out
