"""Simulator profiles built from a model's architecture and a catalogue GPU, dense or MoE.

``PlannedProfile`` is a ``sim.profiles.ModelProfile`` (so ``PhysicsTimer`` and the virtual cluster use it
unchanged) whose weights and KV come from the planner's memory model, and which adds the two costs a MoE
step has that a dense one does not:

- routed experts: a batch of ``n`` tokens touches only some experts, so the weight-read floor grows with the
  expected number of distinct experts hit (``E_local x (1 - (1 - top_k/E)^tokens)``) while compute
  grows with active parameters (``2 x n x top_k x expert_params``);
- expert parallelism: each MoE layer dispatches every token's hidden state to ``top_k`` experts on other ranks
  and combines the results: two all-to-alls of ``n x top_k x hidden x (ep-1)/ep`` bytes.

With ``ep > 1`` each replica of the virtual cluster is one data-parallel attention rank of a wide-EP
deployment; it assumes every rank carries a similar batch (the all-to-all synchronises them), which the
simulator does not enforce. The H100 efficiencies carry over to other devices (``gpus.py``). Everything
MoE-specific here is an estimate: nothing has been calibrated against a MoE kernel measurement yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from lanterna.planner.arch import ModelArch
from lanterna.planner.gpus import Gpu
from lanterna.planner.memory import SINGLE, Parallelism, kv_bytes_per_request, weight_bytes_per_device
from lanterna.sim.profiles import ModelProfile

# the H100 profile's effective all-reduce bus bandwidth (150 GB/s) against NVLink's 450 GB/s per direction
INTERCONNECT_EFFICIENCY = 150e9 / 450e9


@dataclass(frozen=True, slots=True)
class PlannedProfile(ModelProfile):
    resident_weight_bytes: float = 0.0
    kv_token_bytes: float = 0.0
    dense_params: float = 0.0  # non-expert linear parameters on one device
    num_experts: int = 0
    experts_per_token: int = 0
    expert_params: float = 0.0  # one routed expert, one layer
    num_moe_layers: int = 0
    ep: int = 1
    alltoall_latency_s: float = 20e-6  # per collective: launch + sync (an estimate)

    @property
    def linear_params(self) -> float:
        return self.dense_params

    @property
    def weight_bytes(self) -> float:
        return self.resident_weight_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return int(self.kv_token_bytes)

    def _expert_terms(self, num_tokens: int) -> tuple[float, float]:
        """(bytes of expert weights read, expert FLOPs) on one device for a batch of ``num_tokens``."""
        if self.num_experts == 0 or num_tokens <= 0:
            return 0.0, 0.0
        # each token picks top_k distinct experts of E; with EP a rank serves the tokens of every (similar) DP rank
        tokens = num_tokens * max(1, self.ep // self.tp)  # x the data-parallel ranks sharing these experts
        local = self.num_experts / self.ep
        slice_ = 1.0 if self.ep > 1 else 1.0 / self.tp
        touched = local * (1.0 - (1.0 - self.experts_per_token / self.num_experts) ** tokens)
        assignments = num_tokens * self.experts_per_token
        nbytes = touched * self.expert_params * slice_ * self.dtype_bytes * self.num_moe_layers
        flops = 2 * assignments * self.expert_params * slice_ * self.num_moe_layers
        return nbytes, flops

    def linear_s(self, num_tokens: int) -> float:
        if num_tokens <= 0:
            return 0.0
        ebytes, eflops = self._expert_terms(num_tokens)
        floor = (self.dense_params * self.dtype_bytes + ebytes) / (self.hbm_bandwidth_bps * self.weight_read_eff)
        compute = (2 * self.dense_params * num_tokens + eflops) / (self.peak_flops * self.gemm_eff)
        k = self.lin_sharpness
        return float((floor**k + compute**k) ** (1 / k))

    def allreduce_s(self, num_tokens: int) -> float:
        """TP all-reduces (attention and dense parts) plus the EP dispatch/combine all-to-alls."""
        t = ModelProfile.allreduce_s(self, num_tokens)
        if self.ep > 1 and num_tokens > 0 and self.num_moe_layers:
            nbytes = num_tokens * self.experts_per_token * self.hidden_size * self.dtype_bytes * (self.ep - 1) / self.ep
            t += 2 * self.num_moe_layers * (self.alltoall_latency_s + nbytes / self.interconnect_bps)
        return t


def build_profile(arch: ModelArch, gpu: Gpu, par: Parallelism = SINGLE, *, name: str | None = None,
                  kv_dtype_bytes: float = 2.0) -> PlannedProfile:
    """A physics profile for ``arch`` on ``gpu`` with ``par``, named ``<model>-<gpu>-tp<N>[-ep<M>]``."""
    tp = par.tp
    wb = max(1, round(arch.weight_bytes_per_param))
    dense = arch.non_expert_layer_params / tp / par.pp
    head_dim = arch.qk_nope_head_dim + arch.qk_rope_head_dim if arch.is_mla else arch.head_dim
    kv_heads = 1 if arch.is_mla else arch.num_kv_heads
    label = name or f"{arch.name}-{gpu.name.lower()}-tp{tp}" + (f"-ep{par.ep}" if par.ep > 1 else "")
    return PlannedProfile(
        label, arch.num_layers // par.pp, arch.hidden_size, arch.num_heads, kv_heads, head_dim,
        arch.intermediate_size, arch.vocab_size, dtype_bytes=wb, tp=tp, gpu_memory_bytes=gpu.memory_bytes,
        hbm_bandwidth_bps=gpu.achieved_bandwidth_bps, peak_flops=gpu.achieved_flops,
        interconnect_bps=gpu.interconnect_bps * INTERCONNECT_EFFICIENCY,
        resident_weight_bytes=weight_bytes_per_device(arch, par),
        kv_token_bytes=kv_bytes_per_request(arch, 1, tp, par.pp, kv_dtype_bytes),
        dense_params=dense, num_experts=arch.num_experts, experts_per_token=arch.experts_per_token,
        expert_params=arch.expert_params, num_moe_layers=arch.num_moe_layers // par.pp, ep=par.ep,
    )
