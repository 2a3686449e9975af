"""The tokenizer builder is deterministic and gives the shipped shape."""

from __future__ import annotations

from pathlib import Path

from lanterna.models.tokenizer import load_tokenizer
from lanterna.models.tokenizer_build import SPECIAL_TOKENS, build_tokenizer, corpus_files


def test_build_is_deterministic(tmp_path: Path) -> None:
    # A small fixed corpus keeps this fast; determinism does not depend on corpus size.
    root = tmp_path / "corpus"
    root.mkdir()
    for i in range(20):
        (root / f"m{i:02d}.py").write_text(f"def f{i}(x):\n    return x * {i} + len('abc{i}')\n" * 50)
    assert len(corpus_files(root)) == 20
    a = build_tokenizer(tmp_path / "a", corpus_root=root)
    b = build_tokenizer(tmp_path / "b", corpus_root=root)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    tok = load_tokenizer(a)
    assert [tok.id_to_token(i) for i in range(len(SPECIAL_TOKENS))] == list(SPECIAL_TOKENS)
    assert tok.encode("def f(x)")[0] == 0
