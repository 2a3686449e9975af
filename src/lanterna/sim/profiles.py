"""Model + GPU profiles for the physics step timer, calibrated on an H100 (``data/``).

A profile holds the model shape (what the kernels read and multiply), the GPU (what it can
read and multiply per second) and a few calibrated efficiencies that close the gap between
the two. The formulas live here, next to their constants, so tests can check each term
against the measured kernel times in ``data/h100_kernel_times.json``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

_DATA = Path(__file__).with_name("data")


@cache
def calibration_points() -> dict[str, float]:
    """The measured H100 kernel times (ms) and bandwidths, keyed as in the JSON file."""
    raw = json.loads((_DATA / "h100_kernel_times.json").read_text())
    return {k: float(v) for k, v in raw.items() if isinstance(v, int | float)}


@dataclass(frozen=True, slots=True)
class ModelProfile:
    name: str
    # model shape
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    dtype_bytes: int = 2
    tp: int = 1
    # GPU (per device)
    gpu_memory_bytes: float = 85.52e9  # H100 80GB HBM3 as reported by torch (79.65 GiB)
    hbm_bandwidth_bps: float = 2.42e12  # measured device-to-device copy
    peak_flops: float = 784.4e12  # measured bf16 8k GEMM
    interconnect_bps: float = 150e9  # effective all-reduce bus bandwidth (NVLink)
    # calibrated constants
    overhead_s: float = 0.0006  # scheduler + launch + sampling per step
    weight_read_eff: float = 1.05  # achieved / copy bandwidth when streaming weights
    gemm_eff: float = 0.75  # linear layers once compute bound
    lin_sharpness: float = 2.0  # soft max between the weight-read floor and compute
    lm_head_gemm_eff: float = 1.0
    lm_head_sharpness: float = 5.0
    pf_attn_layer_s: float = 2.53e-6  # fixed cost per layer per prefill chunk
    pf_attn_token_head_s: float = 5.42e-10  # per layer, per query head on this device, per token
    pf_attn_eff: float = 0.95  # of peak_flops on attention pairs
    dc_attn_layer_s: float = 8.75e-6  # fixed cost per layer per decode step
    dc_attn_bw_eff: float = 1.268  # achieved / copy bandwidth at large batch
    dc_attn_saturation_heads: float = 52.0  # seqs x kv heads needed to saturate HBM
    allreduce_latency_s: float = 8e-6
    activation_reserve_bytes: float = 2.5e9
    load_bandwidth_bps: float = 25e9  # unused by the engine (it charges tier loads itself)
    # Host CPU work outside the engine that runs on the replica's own cores and so lengthens its steps: the
    # API server's per-request (HTTP, input processing, response) and per-output-token (detokenise, SSE frame)
    # work, a co-located gateway/client's share, and one /metrics render per scrape. Zero on a GPU server,
    # where the API server has cores of its own; measured for the CPU testbed (``planner.calibrate``).
    # ``host_latency_s``: transit a request spends outside any queue (the gateway's loopback hops) before the
    # engine sees it (the virtual cluster delays admission by it).
    host_request_s: float = 0.0
    host_token_s: float = 0.0
    host_scrape_s: float = 0.0
    host_latency_s: float = 0.0
    # Coefficient of variation of a step's wall time (lognormal, mean 1): on a GPU the same batch takes the
    # same time, but a shared CPU host's steps scatter (cache, frequency, other processes), and queueing grows
    # with that scatter. Measured on the CPU testbed from single-stream token gaps (``planner.calibrate``); the
    # virtual cluster draws it (the real-time simulator runs on a real host, with its own scatter).
    step_cv: float = 0.0

    # ---- shape-derived quantities -------------------------------------------------------------
    @property
    def linear_params(self) -> float:
        """Parameters of the per-layer linear layers on one device (no embedding, no lm_head)."""
        h, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        per_layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate_size
        return per_layer * self.num_layers / self.tp

    @property
    def lm_head_params(self) -> float:
        return self.vocab_size * self.hidden_size / self.tp

    @property
    def weight_bytes(self) -> float:
        """Weights resident on one device: linear layers, lm_head and the (sharded) embedding."""
        return (self.linear_params + 2 * self.lm_head_params) * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return self.num_layers * self.num_kv_heads * self.head_dim * 2 * self.dtype_bytes // self.tp

    def num_gpu_blocks(self, block_size: int = 16, gpu_memory_utilization: float = 0.9) -> int:
        """KV blocks per device: memory budget minus weights minus an activation reserve."""
        free = (
            self.gpu_memory_bytes * gpu_memory_utilization - self.weight_bytes - self.activation_reserve_bytes
        )
        return max(0, int(free // (block_size * self.kv_bytes_per_token)))

    # ---- step-time terms (seconds) ------------------------------------------------------------
    def linear_s(self, num_tokens: int) -> float:
        """All linear layers for ``num_tokens`` rows: soft max(weight-read floor, GEMM compute)."""
        if num_tokens <= 0:
            return 0.0
        floor = self.linear_params * self.dtype_bytes / (self.hbm_bandwidth_bps * self.weight_read_eff)
        compute = 2 * self.linear_params * num_tokens / (self.peak_flops * self.gemm_eff)
        k = self.lin_sharpness
        return float((floor**k + compute**k) ** (1 / k))

    def lm_head_s(self, num_rows: int) -> float:
        """lm_head over the rows that sample a token (decodes + prompts finishing this step)."""
        if num_rows <= 0:
            return 0.0
        floor = self.lm_head_params * self.dtype_bytes / (self.hbm_bandwidth_bps * self.weight_read_eff)
        compute = 2 * self.lm_head_params * num_rows / (self.peak_flops * self.lm_head_gemm_eff)
        k = self.lm_head_sharpness
        return float((floor**k + compute**k) ** (1 / k))

    def prefill_attn_s(self, new_tokens: int, context: int) -> float:
        """Causal attention of a chunk over itself and ``context`` earlier tokens, all layers."""
        if new_tokens <= 0:
            return 0.0
        heads = self.num_heads / self.tp
        pairs = new_tokens * context + new_tokens * new_tokens / 2
        flops = 4 * pairs * heads * self.head_dim * self.num_layers
        fixed = self.num_layers * (self.pf_attn_layer_s + self.pf_attn_token_head_s * heads * new_tokens)
        return fixed + flops / (self.peak_flops * self.pf_attn_eff)

    def decode_attn_s(self, num_seqs: int, total_context: int) -> float:
        """Decode attention = KV bytes read / effective bandwidth (few sequences cannot fill HBM)."""
        if num_seqs <= 0:
            return 0.0
        kv_heads = self.num_kv_heads / self.tp
        occupancy = min(1.0, num_seqs * kv_heads / self.dc_attn_saturation_heads)
        bw = self.hbm_bandwidth_bps * self.dc_attn_bw_eff * occupancy
        return self.num_layers * self.dc_attn_layer_s + total_context * self.kv_bytes_per_token / bw

    def allreduce_s(self, num_tokens: int) -> float:
        """Two all-reduces per layer of ``num_tokens x hidden`` activations (zero without TP)."""
        if self.tp <= 1 or num_tokens <= 0:
            return 0.0
        nbytes = num_tokens * self.hidden_size * self.dtype_bytes * 2 * (self.tp - 1) / self.tp
        return 2 * self.num_layers * (self.allreduce_latency_s + nbytes / self.interconnect_bps)


PROFILES: dict[str, ModelProfile] = {
    p.name: p
    for p in (
        ModelProfile("llama-3.1-8b-h100", 32, 4096, 32, 8, 128, 14336, 128256),
        ModelProfile(
            "qwen3-32b-tp2-h100",
            64,
            5120,
            64,
            8,
            128,
            25600,
            151936,
            tp=2,
            pf_attn_layer_s=8.3e-7,
            pf_attn_token_head_s=6.87e-10,
            pf_attn_eff=0.939,
        ),
        ModelProfile("llama-3.1-70b-tp4-h100", 80, 8192, 64, 8, 128, 28672, 128256, tp=4),
        # The 4-layer random-weight test model on 2 CPU cores: ~5 ms + ~0.2 ms per token.
        ModelProfile(
            "tiny-cpu",
            4,
            256,
            4,
            2,
            64,
            688,
            8192,
            dtype_bytes=4,
            gpu_memory_bytes=1 << 30,
            hbm_bandwidth_bps=40e9,
            peak_flops=150e9,
            interconnect_bps=1e9,
            overhead_s=0.005,
            weight_read_eff=1.0,
            gemm_eff=0.3,
            lm_head_gemm_eff=0.3,
            pf_attn_layer_s=1e-5,
            pf_attn_token_head_s=1e-7,
            pf_attn_eff=0.3,
            dc_attn_layer_s=1e-5,
            dc_attn_bw_eff=1.0,
            dc_attn_saturation_heads=2.0,
            activation_reserve_bytes=64e6,
        ),
    )
}


def register_profile(profile: ModelProfile) -> None:
    """Make ``profile`` known by its name (the planner registers profiles it builds from a config.json)."""
    PROFILES[profile.name] = profile


def get_profile(name: str, **overrides: Any) -> ModelProfile:
    """A preset by name, with any field overridden (e.g. ``overhead_s=0.001``)."""
    try:
        base = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {sorted(PROFILES)}") from None
    return dataclasses.replace(base, **overrides) if overrides else base
