"""Per-GPU memory of a vLLM deployment and the KV cache it leaves: the planner's first question is "does it fit".

vLLM's budget per device is ``memory x gpu_memory_utilization``; from it go the weights resident on the device,
the peak activations of a profiling forward pass of ``max_num_batched_tokens`` tokens and the memory outside
PyTorch's allocator (CUDA context, NCCL buffers); the rest is KV cache, cut into blocks of ``block_size``
tokens. Formulas and their sources: ``docs/planner.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lanterna.planner.arch import ModelArch
from lanterna.planner.gpus import Gpu

GIB = float(1 << 30)
# vLLM's logs for Llama-3.1-8B on one H100 report ~0.1-0.2 GiB outside torch; NCCL buffers add ~0.5 GiB with TP
NON_TORCH_BYTES = 0.15 * GIB
NCCL_BYTES = 0.5 * GIB
TP_CHOICES = (1, 2, 4, 8, 16)


@dataclass(frozen=True, slots=True)
class Parallelism:
    """``tp`` x ``pp`` devices per replica; ``ep``: devices the routed experts are spread over (vLLM's
    ``--enable-expert-parallel`` uses TP x DP ranks; 1 = experts sharded by TP like dense layers)."""

    tp: int = 1
    pp: int = 1
    ep: int = 1

    @property
    def num_devices(self) -> int:
        return self.tp * self.pp


SINGLE = Parallelism()


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    model: str
    gpu: str
    tp: int
    pp: int
    ep: int
    gpu_memory_bytes: float
    usable_bytes: float  # memory x gpu_memory_utilization
    weight_bytes: float  # per device (the fullest pipeline stage)
    activation_bytes: float
    non_torch_bytes: float
    kv_cache_bytes: float  # per device; negative when the weights do not fit
    kv_bytes_per_token: float  # per device, all its layers (full-attention view)
    block_size: int
    num_gpu_blocks: int
    kv_cache_tokens: int
    context_len: int
    max_concurrent_requests: int
    max_concurrency: float  # vLLM's "Maximum concurrency for N tokens per request"

    @property
    def fits(self) -> bool:
        return self.max_concurrent_requests >= 1

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.model, "gpu": self.gpu, "tensor_parallel_size": self.tp,
            "pipeline_parallel_size": self.pp, "expert_parallel_size": self.ep, "fits": self.fits,
            "gpu_memory_gib": self.gpu_memory_bytes / GIB, "usable_gib": self.usable_bytes / GIB,
            "weights_gib_per_gpu": self.weight_bytes / GIB, "activation_gib": self.activation_bytes / GIB,
            "non_torch_gib": self.non_torch_bytes / GIB, "kv_cache_gib_per_gpu": self.kv_cache_bytes / GIB,
            "kv_bytes_per_token_per_gpu": self.kv_bytes_per_token, "block_size": self.block_size,
            "num_gpu_blocks": self.num_gpu_blocks, "kv_cache_tokens": self.kv_cache_tokens,
            "context_len": self.context_len, "max_concurrent_requests": self.max_concurrent_requests,
            "max_concurrency": self.max_concurrency,
        }


def kv_bytes_per_token_layer(arch: ModelArch, tp: int, kv_dtype_bytes: float) -> float:
    """KV bytes one token costs in one layer on one device.

    MHA/GQA: K and V, one ``head_dim`` vector per KV head; TP shards the KV heads, replicating them once TP
    exceeds their number. MLA: one compressed latent (``kv_lora_rank``) plus the shared rope key, identical on
    every TP rank (vLLM replicates it)."""
    if arch.is_mla:
        return (arch.kv_lora_rank + arch.qk_rope_head_dim) * kv_dtype_bytes
    heads = max(1.0, arch.num_kv_heads / tp)
    return 2 * heads * arch.head_dim * kv_dtype_bytes


def kv_bytes_per_request(arch: ModelArch, context_len: int, tp: int = 1, pp: int = 1,
                         kv_dtype_bytes: float = 2.0) -> float:
    """KV one request of ``context_len`` tokens holds on one device: sliding-window layers keep at most
    their window."""
    per_layer = kv_bytes_per_token_layer(arch, tp, kv_dtype_bytes)
    full = arch.num_layers - arch.num_sliding_layers
    sliding_tokens = min(context_len, arch.sliding_window) if arch.num_sliding_layers else 0
    return per_layer * (full * context_len + arch.num_sliding_layers * sliding_tokens) / pp


def weight_bytes_per_device(arch: ModelArch, par: Parallelism) -> float:
    """Weights on the fullest device: layers / PP, dense parts / TP, routed experts / EP (or / TP without EP),
    vocabulary-parallel embedding and lm_head / TP (both on one stage without PP)."""
    wb, eb = arch.weight_bytes_per_param, arch.embed_bytes_per_param
    experts_over = par.ep if par.ep > 1 else par.tp
    layers = (arch.non_expert_layer_params * wb / par.tp + arch.routed_expert_params * wb / experts_over) / par.pp
    vocab = arch.vocab_size * arch.hidden_size * eb / par.tp
    embed = vocab if (par.pp > 1 or arch.tie_word_embeddings) else 2 * vocab
    computed = layers + embed
    if arch.exact_weight_bytes is None:
        return computed
    # the checkpoint's exact bytes, split in the same proportions as the computed ones
    return arch.exact_weight_bytes * computed / max(arch.computed_weight_bytes, 1.0)


def activation_bytes(arch: ModelArch, par: Parallelism, max_num_batched_tokens: int = 8192,
                     max_num_seqs: int = 256, act_dtype_bytes: float = 2.0) -> float:
    """Peak of vLLM's profiling pass (an estimate): one layer's widest live tensors for every batched token
    (residual + norm, qkv, the gate/up output and its product) plus fp32 logits for every sequence.
    ~1.1 GiB for Llama-3.1-8B at 8192 tokens, near the ~1.2 GiB vLLM logs on an H100."""
    if arch.is_moe:
        mlp = 3 * arch.moe_intermediate_size * arch.experts_per_token / (par.ep if par.ep > 1 else par.tp)
        mlp = max(mlp, 3 * arch.intermediate_size / par.tp if arch.num_dense_layers else 0.0)
    else:
        mlp = 3 * arch.intermediate_size / par.tp
    qkv = (arch.num_heads + 2 * arch.num_kv_heads) * arch.head_dim / par.tp
    per_token = (4 * arch.hidden_size + qkv + mlp) * act_dtype_bytes
    logits = max_num_seqs * arch.vocab_size / par.tp * 4
    return max_num_batched_tokens * per_token + logits


def plan_memory(arch: ModelArch, gpu: Gpu, par: Parallelism = SINGLE, *, gpu_memory_utilization: float = 0.9,
                block_size: int = 16, context_len: int = 8192, max_num_batched_tokens: int = 8192,
                max_num_seqs: int = 256, kv_dtype_bytes: float = 2.0) -> MemoryPlan:
    """The KV cache one replica gets, in blocks, tokens and requests of ``context_len`` tokens."""
    usable = gpu.memory_bytes * gpu_memory_utilization
    weights = weight_bytes_per_device(arch, par)
    act = activation_bytes(arch, par, max_num_batched_tokens, max_num_seqs)
    non_torch = NON_TORCH_BYTES + (NCCL_BYTES if par.tp * par.pp > 1 else 0.0)
    kv = usable - weights - act - non_torch
    per_token = kv_bytes_per_request(arch, 1, par.tp, par.pp, kv_dtype_bytes) if arch.num_sliding_layers == 0 else (
        kv_bytes_per_token_layer(arch, par.tp, kv_dtype_bytes) * arch.num_layers / par.pp)
    blocks = max(0, int(kv // (per_token * block_size))) if kv > 0 else 0
    tokens = blocks * block_size
    req_blocks = math.ceil(kv_bytes_per_request(arch, context_len, par.tp, par.pp, kv_dtype_bytes)
                           / (per_token * block_size))
    max_req = blocks // req_blocks if req_blocks else 0
    return MemoryPlan(arch.name, gpu.name, par.tp, par.pp, par.ep, gpu.memory_bytes, usable, weights, act,
                      non_torch, kv, per_token, block_size, blocks, tokens, context_len, max_req,
                      tokens / context_len if context_len else 0.0)


def feasible_tp(arch: ModelArch, gpu: Gpu, *, context_len: int = 8192, min_requests: int = 1,
                **kw: float) -> list[int]:
    """TP sizes that vLLM accepts (attention heads divide evenly) and that hold ``min_requests`` requests of
    ``context_len`` tokens next to the weights, smallest first."""
    out = []
    for tp in TP_CHOICES:
        if tp > gpu.max_devices_per_node or arch.num_heads % tp:
            continue
        ep = tp if arch.is_moe else 1
        plan = plan_memory(arch, gpu, Parallelism(tp=tp, ep=ep), context_len=context_len, **kw)  # type: ignore[arg-type]
        if plan.max_concurrent_requests >= min_requests:
            out.append(tp)
    return out
