"""A tiny random-weight ``LlamaForCausalLM`` that real vLLM can serve on CPU, written with numpy only (no torch).

Why: tests need a real vLLM to compare the simulator with, and no hub is reachable. Weights are random
(outputs are gibberish) but shapes, tokenizer, chat template, KV events and metrics are all real. Deterministic
from a seed, so two builds are byte-identical.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lanterna.errors import ConfigError
from lanterna.models.tokenizer import DEFAULT_DIR, TOKENIZER_FILES

MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", *TOKENIZER_FILES)


@dataclass(frozen=True, slots=True)
class TinyLlamaSpec:
    """Shape of the tiny model (about 6.5M parameters, 26 MB in float32)."""

    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 8192
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    init_std: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def safetensors_save(tensors: dict[str, np.ndarray], path: str, metadata: dict[str, str]) -> None:
    """``safetensors.numpy.save_file``, imported on use: safetensors is the ``[models]`` extra."""
    try:
        from safetensors.numpy import save_file
    except ModuleNotFoundError:
        raise ConfigError("writing model weights needs safetensors: pip install 'lanterna[models]'") from None
    save_file(tensors, path, metadata=metadata)


def llama_config(spec: TinyLlamaSpec, bos_token_id: int = 0, eos_token_id: int = 1) -> dict[str, object]:
    """The HF ``config.json`` for ``spec``."""
    cfg = {k: v for k, v in asdict(spec).items() if k != "init_std"}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **cfg,
        "head_dim": spec.head_dim,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": spec.init_std,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": 2,
        "rope_scaling": None,
        "use_cache": True,
        "transformers_version": "4.46.0",
    }


def llama_weights(spec: TinyLlamaSpec, seed: int) -> dict[str, np.ndarray]:
    """Random normal(0, init_std) matrices and unit norms, in HF Llama tensor names."""
    rng = np.random.default_rng(seed)
    h, i, d = spec.hidden_size, spec.intermediate_size, spec.head_dim

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * spec.init_std).astype(np.float32)

    w: dict[str, np.ndarray] = {"model.embed_tokens.weight": mat(spec.vocab_size, h)}
    for n in range(spec.num_hidden_layers):
        p = f"model.layers.{n}."
        w[p + "self_attn.q_proj.weight"] = mat(spec.num_attention_heads * d, h)
        w[p + "self_attn.k_proj.weight"] = mat(spec.num_key_value_heads * d, h)
        w[p + "self_attn.v_proj.weight"] = mat(spec.num_key_value_heads * d, h)
        w[p + "self_attn.o_proj.weight"] = mat(h, spec.num_attention_heads * d)
        w[p + "mlp.gate_proj.weight"] = mat(i, h)
        w[p + "mlp.up_proj.weight"] = mat(i, h)
        w[p + "mlp.down_proj.weight"] = mat(h, i)
        w[p + "input_layernorm.weight"] = np.ones(h, dtype=np.float32)
        w[p + "post_attention_layernorm.weight"] = np.ones(h, dtype=np.float32)
    w["model.norm.weight"] = np.ones(h, dtype=np.float32)
    w["lm_head.weight"] = mat(spec.vocab_size, h)
    return w


def write_tokenizer(out_dir: str | Path, source: str | Path | None = None) -> Path:
    """Copy the tokenizer files (default: the shipped one) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = Path(source) if source else DEFAULT_DIR
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    return out


def write_tiny_model(out_dir: str | Path, *, seed: int = 0, spec: TinyLlamaSpec | None = None) -> Path:
    """Write config, generation config, weights and tokenizer into ``out_dir``; returns it."""
    spec = spec or TinyLlamaSpec()
    out = write_tokenizer(out_dir)
    (out / "config.json").write_text(json.dumps(llama_config(spec), indent=2) + "\n")
    gen = {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2, "transformers_version": "4.46.0"}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    tmp = out / "model.safetensors.tmp"
    safetensors_save(llama_weights(spec, seed), str(tmp), metadata={"format": "pt"})
    tmp.replace(out / "model.safetensors")  # atomic: a half-written model never looks complete
    return out


def is_complete(model_dir: str | Path) -> bool:
    """True when every model file is present (used to reuse a cached build)."""
    d = Path(model_dir)
    return all((d / name).is_file() for name in MODEL_FILES)
