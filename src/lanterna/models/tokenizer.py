"""The tokenizer Lanterna shares with the simulator and real vLLM: HF ``tokenizers`` + a jinja2 chat template.

``load_tokenizer(None)`` gives the default byte-level BPE shipped in ``models/data/`` (the tiny model's own
tokenizer), so token counts, prefix-cache blocks and KV-event token ids agree across gateway, sim and vLLM.
Encoding adds BOS like vLLM's tokenizer does for the tiny model; chat prompts carry BOS as template text and are
encoded with ``add_special_tokens=False`` (vLLM's chat path).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from lanterna.models.chat_template import render_chat
from lanterna.models.detokenizer import IncrementalDetokenizer

DEFAULT_DIR = Path(__file__).resolve().parent / "data"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _token_text(value: Any) -> str | None:
    """tokenizer_config values are either a string or an AddedToken dict with ``content``."""
    if isinstance(value, Mapping):
        return str(value.get("content"))
    return None if value is None else str(value)


class Tokenizer:
    """Encode/decode plus chat templating; thread-safe (the Rust tokenizer is), so it can run in a worker pool."""

    __slots__ = ("_tok", "path", "chat_template", "bos_token", "eos_token", "bos_token_id", "eos_token_id",
                 "_special_ids", "_add_bos")

    def __init__(self, tok: HFTokenizer, config: Mapping[str, Any], path: Path | None = None):
        self._tok = tok
        self.path = path
        self.chat_template: str | None = config.get("chat_template")
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        self.bos_token_id = tok.token_to_id(self.bos_token) if self.bos_token else None
        self.eos_token_id = tok.token_to_id(self.eos_token) if self.eos_token else None
        self._special_ids = frozenset(int(k) for k, v in (config.get("added_tokens_decoder") or {}).items()
                                      if v.get("special", True))
        # If tokenizer.json has no post-processor, add BOS ourselves when the config asks for it.
        self._add_bos = bool(config.get("add_bos_token", False)) and tok.post_processor is None

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids: list[int] = self._tok.encode(text, add_special_tokens=add_special_tokens).ids
        if add_special_tokens and self._add_bos and self.bos_token_id is not None:
            ids.insert(0, self.bos_token_id)
        return ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        """Batch encode (parallel in Rust); use for many prompts at once."""
        encs = self._tok.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        out: list[list[int]] = [e.ids for e in encs]
        if add_special_tokens and self._add_bos and self.bos_token_id is not None:
            out = [[self.bos_token_id, *ids] for ids in out]
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    def detokenizer(self, skip_special_tokens: bool = True) -> IncrementalDetokenizer:
        """A fresh incremental detokenizer for one streamed sequence."""
        return IncrementalDetokenizer(lambda ids: self.decode(ids, skip_special_tokens=skip_special_tokens))

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                            chat_template: str | None = None, **variables: Any) -> str:
        """Render messages to prompt text (encode it with ``add_special_tokens=False``, as vLLM does)."""
        source = chat_template or self.chat_template
        if not source:
            raise ValueError("this tokenizer has no chat_template")
        return render_chat(source, messages, add_generation_prompt=add_generation_prompt,
                           bos_token=self.bos_token or "", eos_token=self.eos_token or "", **variables)

    def encode_chat(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        """Chat prompt token ids exactly as vLLM computes them for ``/v1/chat/completions``."""
        return self.encode(self.apply_chat_template(messages, add_generation_prompt), add_special_tokens=False)


def load_tokenizer(path: str | Path | None = None) -> Tokenizer:
    """Load ``tokenizer.json`` (+ ``tokenizer_config.json``) from a model dir or file; ``None`` -> the default."""
    p = DEFAULT_DIR if path is None else Path(path)
    directory = p.parent if p.is_file() else p
    tok_file = p if p.is_file() else p / "tokenizer.json"
    if not tok_file.is_file():
        raise FileNotFoundError(f"no tokenizer.json at {p}")
    cfg_file = directory / "tokenizer_config.json"
    config = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    return Tokenizer(HFTokenizer.from_file(str(tok_file)), config, directory)
