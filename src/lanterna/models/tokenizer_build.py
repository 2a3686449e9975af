"""Train the default tokenizer: a deterministic byte-level BPE (vocab 8192) over Python standard-library sources.

Why our own: no model hub is reachable, and tests, the simulator and real vLLM must share one tokenizer. The
result is committed under ``models/data/``; this builder documents (and can redo) how it was made.
"""

from __future__ import annotations

import json
import sysconfig
from collections.abc import Iterator
from pathlib import Path

VOCAB_SIZE = 8192
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|end|>")
SPECIAL_TOKENS = (BOS, EOS, PAD, *ROLE_TOKENS)  # ids 0..7, in this order
CORPUS_BYTES = 6 << 20  # enough text for stable merges; keeps training ~10 s on 2 cores

# HF-style template: roles as special tokens, BOS as text (vLLM renders chat with add_special_tokens=False).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}"
    "{{ raise_exception('Unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' + (message['content'] or '') + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def corpus_files(root: Path | None = None, limit_bytes: int = CORPUS_BYTES) -> list[Path]:
    """Sorted stdlib ``*.py`` files (tests and site-packages excluded) up to ``limit_bytes``: deterministic."""
    base = root or Path(sysconfig.get_paths()["stdlib"])
    picked: list[Path] = []
    total = 0
    for p in sorted(base.rglob("*.py")):
        rel = p.relative_to(base).parts
        if any(part in ("site-packages", "test", "tests", "idlelib", "lib2to3") for part in rel):
            continue
        size = p.stat().st_size
        if total + size > limit_bytes:
            continue
        picked.append(p)
        total += size
    return picked


def _lines(files: list[Path]) -> Iterator[str]:
    for f in files:
        yield f.read_text(encoding="utf-8", errors="replace")


def build_tokenizer(out_dir: str | Path, *, corpus_root: Path | None = None) -> Path:
    """Train and write ``tokenizer.json`` + ``tokenizer_config.json`` into ``out_dir``; returns the dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_lines(corpus_files(corpus_root)), trainer=trainer)
    # BOS on encode(add_special_tokens=True), as vLLM's /tokenize shows (token 0 first).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    tok.save(str(out / "tokenizer.json"), pretty=False)
    added = {
        str(tok.token_to_id(t)): {
            "content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": 2048,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": added,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}, indent=2) + "\n"
    )
    return out
