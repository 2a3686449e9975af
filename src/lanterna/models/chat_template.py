"""Render a Hugging Face chat template with jinja2 the way ``transformers`` does.

Same environment (sandboxed, ``trim_blocks``/``lstrip_blocks``, ``raise_exception``, ``tojson``, ``strftime_now``)
so a template renders to the same text here, in the simulator and in real vLLM; otherwise token counts and
prefix-cache keys would diverge between the gateway and the model server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import Template
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ChatTemplateError(ValueError):
    """The template raised (``raise_exception``) or could not render these messages."""


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def compile_template(source: str) -> Template:
    """Compile once per distinct template source (bounded cache)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


def _text_content(content: Any) -> Any:
    """OpenAI content parts -> plain text (text parts joined by newlines), as vLLM does for 'string' templates."""
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return content


def render_chat(source: str, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
                **variables: Any) -> str:
    """Render ``messages`` (OpenAI chat shape) to the prompt text; raises ``ChatTemplateError``."""
    msgs = [{**m, "content": _text_content(m.get("content"))} for m in messages]
    try:
        return compile_template(source).render(messages=msgs, add_generation_prompt=add_generation_prompt, **variables)
    except TemplateError as exc:
        raise ChatTemplateError(str(exc)) from exc
