"""A model's architecture from its Hugging Face ``config.json`` (and, optionally, its safetensors headers).

Only the fields that decide memory and step time are kept: layer count and widths, attention kind (MHA/GQA,
MLA, sliding window per layer), MoE shape (routed + shared experts, top-k, dense layers first) and the
weight dtype. Parameter counts are computed from the shape (``params``); a safetensors header, when given,
replaces the computed total by the exact bytes on disk.

Covers the config spellings of Llama/Mistral/Qwen2/Qwen3 (dense), Mixtral (``num_local_experts``),
Qwen2/3-MoE (``num_experts``, ``moe_intermediate_size``, ``decoder_sparse_step``, ``mlp_only_layers``) and
DeepSeek-V2/V3 (MLA: ``kv_lora_rank``, ``qk_rope_head_dim``; ``n_routed_experts``, ``first_k_dense_replace``).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DTYPE_BYTES: dict[str, float] = {
    "float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "half": 2, "bfloat16": 2, "bf16": 2,
    "float8": 1, "fp8": 1, "fp8_e4m3": 1, "int8": 1, "int4": 0.5, "fp4": 0.5, "nvfp4": 0.5, "mxfp4": 0.5,
}
# safetensors dtype tags -> bytes per element
_ST_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
             "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_QUANT_BYTES = {"fp8": 1.0, "fbgemm_fp8": 1.0, "compressed-tensors": 1.0, "gptq": 0.5, "awq": 0.5,
                "bitsandbytes": 0.5, "mxfp4": 0.5, "modelopt_fp4": 0.5}


@dataclass(frozen=True, slots=True)
class ModelArch:
    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense MLP width (dense layers of a MoE too)
    vocab_size: int
    tie_word_embeddings: bool = False
    weight_bytes_per_param: float = 2.0  # linear layers (a quantized checkpoint stores fewer)
    embed_bytes_per_param: float = 2.0  # embeddings and lm_head stay in the activation dtype
    # MLA (DeepSeek): KV cache holds one latent of kv_lora_rank + rope dims per layer, shared by all heads
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    q_lora_rank: int = 0
    # sliding window: the window (tokens) and which layers use it
    sliding_window: int = 0
    num_sliding_layers: int = 0
    # MoE
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    num_shared_experts: int = 0
    num_dense_layers: int = 0  # layers with a dense MLP in a MoE model
    exact_weight_bytes: float | None = None  # from safetensors headers, total over the checkpoint
    model_id: str = ""  # what vLLM loads (config's ``_name_or_path``); the name when absent

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.num_dense_layers if self.is_moe else 0

    # ---- parameter counts (one copy of the model) ---------------------------------------------------
    @property
    def attention_params_per_layer(self) -> float:
        h = self.hidden_size
        if self.is_mla:
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            q = (h * self.q_lora_rank + self.q_lora_rank * self.num_heads * qk) if self.q_lora_rank else (
                h * self.num_heads * qk)
            kv_a = h * (self.kv_lora_rank + self.qk_rope_head_dim)
            kv_b = self.kv_lora_rank * self.num_heads * (self.qk_nope_head_dim + self.v_head_dim)
            return q + kv_a + kv_b + self.num_heads * self.v_head_dim * h
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return h * q + 2 * h * kv + q * h

    @property
    def dense_mlp_params(self) -> float:
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def expert_params(self) -> float:
        """One routed expert (gate, up, down)."""
        return 3 * self.hidden_size * self.moe_intermediate_size

    @property
    def routed_expert_params(self) -> float:
        """Every routed expert of every MoE layer: what expert parallelism shards."""
        return self.num_moe_layers * self.num_experts * self.expert_params

    @property
    def non_expert_layer_params(self) -> float:
        """Attention of all layers, dense MLPs, shared experts and routers: what tensor parallelism shards."""
        shared = self.num_shared_experts * self.expert_params + self.hidden_size * self.num_experts
        dense_layers = self.num_layers - self.num_moe_layers
        return (self.num_layers * self.attention_params_per_layer + dense_layers * self.dense_mlp_params
                + self.num_moe_layers * shared)

    @property
    def embedding_params(self) -> float:
        """Input embedding plus lm_head (counted once when tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def params(self) -> float:
        return self.non_expert_layer_params + self.routed_expert_params + self.embedding_params

    @property
    def active_params(self) -> float:
        """Parameters one token multiplies: all but the routed experts it was not sent to."""
        if not self.is_moe:
            return self.params
        active_experts = self.num_moe_layers * self.experts_per_token * self.expert_params
        return self.non_expert_layer_params + active_experts + self.embedding_params

    @property
    def weight_bytes(self) -> float:
        """The whole checkpoint: the safetensors total when known, else the shape times the dtype."""
        return self.computed_weight_bytes if self.exact_weight_bytes is None else self.exact_weight_bytes

    @property
    def computed_weight_bytes(self) -> float:
        layers = self.non_expert_layer_params + self.routed_expert_params
        return layers * self.weight_bytes_per_param + self.embedding_params * self.embed_bytes_per_param


def _get(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        v = cfg.get(k)
        if v is not None:
            return v
    return default


def _sliding(cfg: dict[str, Any], num_layers: int) -> tuple[int, int]:
    """(window, number of sliding-window layers), from ``layer_types`` or the Mistral/Qwen flags."""
    window = int(cfg.get("sliding_window") or 0)
    if not window:
        return 0, 0
    types = cfg.get("layer_types")
    if isinstance(types, list):
        return window, sum(1 for t in types if t == "sliding_attention")
    if cfg.get("use_sliding_window") is False:
        return 0, 0
    if "max_window_layers" in cfg and cfg.get("use_sliding_window"):  # Qwen2: layers >= max_window_layers slide
        return window, max(0, num_layers - int(cfg["max_window_layers"]))
    return window, num_layers  # Mistral-7B-v0.1 style: every layer slides


def arch_from_config(cfg: dict[str, Any], name: str = "model") -> ModelArch:
    """Parse a ``config.json`` mapping (multimodal configs: the ``text_config`` inside)."""
    if isinstance(cfg.get("text_config"), dict):
        cfg = {**cfg["text_config"], "quantization_config": cfg.get("quantization_config")}
    layers = int(cfg["num_hidden_layers"])
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    dtype = str(_get(cfg, "torch_dtype", "dtype", default="bfloat16")).removeprefix("torch.")
    embed_bytes = DTYPE_BYTES.get(dtype, 2.0)
    quant = cfg.get("quantization_config") or {}
    wbytes = _QUANT_BYTES.get(str(quant.get("quant_method", "")), embed_bytes) if quant else embed_bytes
    if quant.get("bits") in (4, 8) and quant.get("quant_method") in ("gptq", "awq"):
        wbytes = int(quant["bits"]) / 8
    experts = int(_get(cfg, "num_local_experts", "n_routed_experts", "num_experts", default=0))
    dense_first = int(cfg.get("first_k_dense_replace", 0))
    if experts and cfg.get("mlp_only_layers"):
        dense_first = len(cfg["mlp_only_layers"])
    elif experts and int(cfg.get("decoder_sparse_step", 1)) > 1:
        step = int(cfg["decoder_sparse_step"])
        dense_first = layers - sum(1 for i in range(layers) if (i + 1) % step == 0)
    window, num_sliding = _sliding(cfg, layers)
    return ModelArch(
        name=name, num_layers=layers, hidden_size=hidden, num_heads=heads,
        num_kv_heads=int(_get(cfg, "num_key_value_heads", default=heads)),
        head_dim=int(_get(cfg, "head_dim", default=hidden // heads)),
        intermediate_size=int(cfg.get("intermediate_size", 4 * hidden)), vocab_size=int(cfg["vocab_size"]),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        weight_bytes_per_param=wbytes, embed_bytes_per_param=embed_bytes,
        kv_lora_rank=int(cfg.get("kv_lora_rank") or 0), qk_rope_head_dim=int(cfg.get("qk_rope_head_dim") or 0),
        qk_nope_head_dim=int(cfg.get("qk_nope_head_dim") or 0), v_head_dim=int(cfg.get("v_head_dim") or 0),
        q_lora_rank=int(cfg.get("q_lora_rank") or 0), sliding_window=window, num_sliding_layers=num_sliding,
        num_experts=experts, experts_per_token=int(cfg.get("num_experts_per_tok", 0)) if experts else 0,
        moe_intermediate_size=int(_get(cfg, "moe_intermediate_size", "intermediate_size", default=0)) if experts else 0,
        num_shared_experts=int(cfg.get("n_shared_experts") or 0), num_dense_layers=dense_first if experts else 0,
        model_id=str(cfg.get("_name_or_path") or name),
    )


def safetensors_bytes(paths: list[Path]) -> float:
    """Total tensor bytes declared by safetensors headers (8-byte little-endian length + JSON); data unread."""
    total = 0.0
    for p in paths:
        with open(p, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for key, t in header.items():
            if key == "__metadata__":
                continue
            start, end = t["data_offsets"]
            total += end - start
    return total


def load_arch(path: str | Path) -> ModelArch:
    """A model from a ``config.json`` path or a model directory (whose ``*.safetensors`` headers, if present,
    give the exact weight bytes). Bundled names (``llama-3.1-8b``, ``deepseek-v3``...) resolve too."""
    p = Path(path)
    if not p.exists():
        bundled = BUNDLED / f"{str(path).lower()}.json"
        if not bundled.exists():
            known = ", ".join(sorted(x.stem for x in BUNDLED.glob("*.json")))
            raise FileNotFoundError(f"no config.json at {path} (bundled models: {known})")
        p = bundled
    cfg_path = p / "config.json" if p.is_dir() else p
    cfg = json.loads(cfg_path.read_text())
    name = p.stem if p.is_file() and p.name != "config.json" else (p if p.is_dir() else p.parent).name
    arch = arch_from_config(cfg, name)
    shards = sorted(p.glob("*.safetensors")) if p.is_dir() else []
    if shards:
        from dataclasses import replace

        arch = replace(arch, exact_weight_bytes=safetensors_bytes(shards))
    return arch


BUNDLED = Path(__file__).with_name("data") / "models"
