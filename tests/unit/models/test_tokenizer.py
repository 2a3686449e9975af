"""The default tokenizer: BOS like vLLM, round trips, chat template, incremental detokenizer."""

from __future__ import annotations

import json

import pytest

from lanterna.models.chat_template import ChatTemplateError
from lanterna.models.tokenizer import DEFAULT_DIR, load_tokenizer
from tests.conftest import REFERENCE


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(None)


def test_default_shape(tok) -> None:
    assert tok.vocab_size == 8192
    assert (tok.bos_token_id, tok.eos_token_id) == (0, 1)
    assert (DEFAULT_DIR / "tokenizer.json").stat().st_size < 1_000_000


def test_bos_first_like_vllm_tokenize(tok) -> None:
    # vLLM's /tokenize capture starts with token 0 (BOS) and counts it.
    body = json.loads((REFERENCE / "tokenize.txt").read_text().split("\n\n", 1)[1])
    assert body["tokens"][0] == 0
    ids = tok.encode("Hello world")
    assert ids[0] == tok.bos_token_id
    assert tok.encode("Hello world", add_special_tokens=False) == ids[1:]


@pytest.mark.parametrize("text", ["", "def f(x):\n    return x", "héllo ✓ 日本語", "  spaces  ", "a" * 500],
                         ids=["empty", "code", "unicode", "spaces", "long"])
def test_round_trip(tok, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


def test_encode_batch_matches_encode(tok) -> None:
    texts = ["one", "two words", "import os\n"]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts, add_special_tokens=False) == [tok.encode(t, False) for t in texts]


def test_chat_template(tok) -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    text = tok.apply_chat_template(msgs)
    assert text == "<s><|system|>\nBe brief.<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>\n"
    assert not tok.apply_chat_template(msgs, add_generation_prompt=False).endswith("<|assistant|>\n")
    ids = tok.encode_chat(msgs)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


def test_chat_content_parts(tok) -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert tok.apply_chat_template(parts) == tok.apply_chat_template([{"role": "user", "content": "a\nb"}])


def test_chat_template_raise_exception(tok) -> None:
    with pytest.raises(ChatTemplateError, match="Unknown role"):
        tok.apply_chat_template([{"role": "wizard", "content": "x"}])


@pytest.mark.parametrize("text", ["hello world, this is streaming", "日本語 ✓ émoji 🎉 mix", "x\n\ty  z"],
                         ids=["ascii", "multibyte", "whitespace"])
def test_incremental_detokenizer(tok, text: str) -> None:
    ids = tok.encode(text, add_special_tokens=False)
    det = tok.detokenizer()
    pieces = [det.push([i]) for i in ids]
    pieces.append(det.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_load_from_model_dir(tmp_path) -> None:
    from lanterna.models.tiny import write_tokenizer

    write_tokenizer(tmp_path)
    t = load_tokenizer(tmp_path)
    assert t.encode("abc") == load_tokenizer(None).encode("abc")
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing")
