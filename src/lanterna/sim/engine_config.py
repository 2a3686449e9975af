"""The engine's knobs (vLLM's engine args that matter to scheduling and caching) and its counters."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

SchedulingPolicy = Literal["fcfs", "priority"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    block_size: int = 16
    num_gpu_blocks: int = 4096
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int = 8192
    enable_prefix_caching: bool = True
    vocab_size: int = 8192
    hash_seed: int = 0  # like PYTHONHASHSEED: changes block hashes, not behaviour
    num_cpu_blocks: int = 0  # optional secondary tiers (0 = off)
    num_storage_blocks: int = 0
    kv_bytes_per_token: int = 131072  # for transfer times (tiers, P/D)
    cpu_bandwidth_bps: float = 25e9
    storage_bandwidth_bps: float = 2e9
    # P/D remote prefill pull charged inside the admitting step (blocks the batch). Drivers that model the link
    # (sim.pd, cluster.virtual_pd) pay the transfer *before* admission, as NIXL's async read does, and keep inf.
    kv_transfer_bandwidth_bps: float = math.inf
    eos_probability: float = 0.02  # per token after min_tokens, when ignore_eos is False
    scheduling_policy: SchedulingPolicy = "fcfs"  # vLLM's --scheduling-policy
    # LoRA (``sim/lora_slots.py``): 0 = adapters are free and unlimited; else vLLM's --max-loras (distinct
    # adapters per batch = GPU slots, LRU) and the seconds a step pays to load an adapter that is not resident.
    max_loras: int = 0
    lora_load_s: float = 0.0
    # Drivers that only count tokens (the virtual cluster) set this: a token that is neither a request's
    # first nor its last is reported as its request id in ``EngineStepOutput.decoded`` instead of a
    # ``RequestTokens`` (two objects fewer per token on the hottest path).
    compact_outputs: bool = False


@dataclass(slots=True)
class EngineStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float  # 0..1 of GPU blocks in use by requests
    num_gpu_blocks: int
    block_size: int
    prefix_cache_queries: int  # cumulative prompt tokens looked up
    prefix_cache_hits: int  # cumulative tokens found in the GPU prefix cache
    num_preemptions: int
    num_cpu_blocks: int
    num_prompt_tokens: int
    num_generation_tokens: int
    num_tier_hit_tokens: int = 0  # tokens loaded back from CPU / storage tiers
    num_storage_hit_tokens: int = 0  # the part of those loaded from (possibly shared) storage
    # LoRA, as ``vllm:lora_requests_info`` reports it (a name may be in both lists), and the slot counters
    max_loras: int = 0
    running_lora_adapters: list[str] = field(default_factory=list)
    waiting_lora_adapters: list[str] = field(default_factory=list)
    num_lora_loads: int = 0
    num_lora_evictions: int = 0
