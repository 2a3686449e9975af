"""LoRA adapters for the tiny model in PEFT layout (``adapter_config.json`` + ``adapter_model.safetensors``).

B is random rather than PEFT's zeros so that an adapter really changes the output: tests can tell a LoRA
request from a base-model one. r=8 on q_proj/v_proj; deterministic from a seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lanterna.models.tiny import TinyLlamaSpec, safetensors_save

TARGET_MODULES = ("q_proj", "v_proj")


def write_lora(out_dir: str | Path, *, base_model: str | Path, seed: int = 1, rank: int = 8, alpha: int = 16,
               spec: TinyLlamaSpec | None = None) -> Path:
    """Write one adapter into ``out_dir``; returns it."""
    spec = spec or TinyLlamaSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out_dims = {"q_proj": spec.num_attention_heads * spec.head_dim, "v_proj": spec.num_key_value_heads * spec.head_dim}
    tensors: dict[str, np.ndarray] = {}
    for n in range(spec.num_hidden_layers):
        for mod in TARGET_MODULES:
            p = f"base_model.model.model.layers.{n}.self_attn.{mod}."
            tensors[p + "lora_A.weight"] = (rng.standard_normal((rank, spec.hidden_size)) * 0.05).astype(np.float32)
            tensors[p + "lora_B.weight"] = (rng.standard_normal((out_dims[mod], rank)) * 0.05).astype(np.float32)
    safetensors_save(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base_model),
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": list(TARGET_MODULES),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def is_lora_complete(lora_dir: str | Path) -> bool:
    d = Path(lora_dir)
    return (d / "adapter_config.json").is_file() and (d / "adapter_model.safetensors").is_file()
