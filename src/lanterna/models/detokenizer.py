"""Incremental detokenization for streaming: emit each new piece of text exactly once.

Decoding token by token breaks multi-byte characters and byte-level merges, so (like vLLM) we decode a short
window ``ids[prefix:]`` and emit only what extends the already-emitted window text, holding back output that
ends in an incomplete UTF-8 sequence (U+FFFD). Each step decodes only the last two pushes, so cost per token stays flat.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class IncrementalDetokenizer:
    """Feed token ids as they are generated; ``push`` returns the new text (possibly empty)."""

    decode: Callable[[list[int]], str]
    ids: list[int] = field(default_factory=list)
    prefix_offset: int = 0
    read_offset: int = 0

    def push(self, new_ids: Iterable[int]) -> str:
        self.ids.extend(new_ids)
        prefix_text = self.decode(self.ids[self.prefix_offset:self.read_offset])
        full_text = self.decode(self.ids[self.prefix_offset:])
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            delta = full_text[len(prefix_text):]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return delta
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end of the sequence (e.g. a trailing partial character)."""
        prefix_text = self.decode(self.ids[self.prefix_offset:self.read_offset])
        full_text = self.decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return full_text[len(prefix_text):]
