"""The pre-split SSE chunk must be byte-identical to the ``protocol.openai`` builders it stands in for."""

from __future__ import annotations

from typing import Any

import pytest

from lanterna.protocol import openai as oai
from lanterna.sim.sse import ChunkTemplate


@pytest.mark.parametrize("build", [oai.completion_chunk, oai.chat_chunk], ids=["completion", "chat"])
@pytest.mark.parametrize("text", ["", "hello", ' "quoted" \\ back', "\n\t\x01", "日本語 ✓", "\u2028"])
def test_render_equals_builder(build: Any, text: str) -> None:
    tmpl = ChunkTemplate(build, "cmpl-0123456789abcdef", 1700000000, 'mo"del')
    assert tmpl.render(text) == build("cmpl-0123456789abcdef", 1700000000, 'mo"del', text, None, None, False)


def test_builder_without_text_slot_is_refused() -> None:
    with pytest.raises(RuntimeError):
        ChunkTemplate(lambda *a: b"data: {}\n\n", "r", 0, "m")
