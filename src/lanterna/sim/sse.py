"""Pre-split SSE chunks: a stream's content chunks differ only in their text, so encode the rest once.

``protocol.openai`` owns the exact vLLM chunk shapes; we render one chunk with a sentinel text through it
and split the bytes around the sentinel. Each later token then costs one string encode and two
concatenations instead of building and encoding a nested dict, and the bytes stay identical to the
builder's (tested). Only plain content chunks (no ``finish_reason``, no usage) take this path.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

_SENTINEL = "\x01lanterna-sse-text\x01"
_encode_str = msgspec.json.Encoder().encode
_SENTINEL_JSON = _encode_str(_SENTINEL)

ChunkBuilder = Callable[..., bytes]


class ChunkTemplate:
    """``render(text)`` == ``build(rid, created, model, text, None, None, False)``, byte for byte."""

    __slots__ = ("_head", "_tail")

    def __init__(self, build: ChunkBuilder, rid: str, created: int, model: str) -> None:
        raw = build(rid, created, model, _SENTINEL, None, None, False)
        head, sep, tail = raw.partition(_SENTINEL_JSON)
        if not sep or _SENTINEL_JSON in tail:  # the builder changed shape: fail loudly at the first request
            raise RuntimeError("SSE chunk builder does not embed the text exactly once")
        self._head, self._tail = head, tail

    def render(self, text: str) -> bytes:
        return self._head + _encode_str(text) + self._tail
