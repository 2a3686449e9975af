"""The tiny Llama and LoRA writers: shapes, determinism, completeness, CLI."""

from __future__ import annotations

import json

from safetensors.numpy import load_file

from lanterna.cli.main import main
from lanterna.models.lora import is_lora_complete, write_lora
from lanterna.models.tiny import TinyLlamaSpec, is_complete, write_tiny_model


def test_tiny_model_shapes_and_determinism(tmp_path) -> None:
    a = write_tiny_model(tmp_path / "a", seed=3)
    b = write_tiny_model(tmp_path / "b", seed=3)
    c = write_tiny_model(tmp_path / "c", seed=4)
    assert is_complete(a)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["vocab_size"] == 8192
    assert cfg["max_position_embeddings"] >= 2048
    w = load_file(str(a / "model.safetensors"))
    spec = TinyLlamaSpec()
    assert w["model.embed_tokens.weight"].shape == (8192, 256)
    assert w["model.layers.0.self_attn.k_proj.weight"].shape == (spec.num_key_value_heads * spec.head_dim, 256)
    assert w["model.layers.3.mlp.down_proj.weight"].shape == (256, spec.intermediate_size)
    assert all(v.dtype.name == "float32" for v in w.values())
    assert 6_000_000 < sum(v.size for v in w.values()) < 7_000_000


def test_incomplete_model_detected(tmp_path) -> None:
    d = write_tiny_model(tmp_path / "m")
    (d / "model.safetensors").unlink()
    assert not is_complete(d)


def test_lora_layout(tmp_path) -> None:
    d = write_lora(tmp_path / "l", base_model=tmp_path / "m")
    assert is_lora_complete(d)
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8 and cfg["target_modules"] == ["q_proj", "v_proj"]
    w = load_file(str(d / "adapter_model.safetensors"))
    assert w["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (8, 256)
    assert w["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"].shape == (128, 8)
    assert len(w) == 4 * 2 * 2


def test_cli_tiny_with_lora(tmp_path, capsys) -> None:
    assert main(["models", "tiny", str(tmp_path / "tiny"), "--lora", "a", "--lora", f"b={tmp_path / 'bdir'}"]) == 0
    assert is_complete(tmp_path / "tiny")
    assert is_lora_complete(tmp_path / "a") and is_lora_complete(tmp_path / "bdir")
    assert main(["models", "tokenizer", str(tmp_path / "tok")]) == 0
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
