"""Accelerator catalogue: memory, bandwidth, FLOPs and interconnect from vendors' published specs.

Figures are the dense (no sparsity) peaks and the per-device memory that the runtime reports (what vLLM's
``gpu_memory_utilization`` multiplies). The simulator's efficiencies were calibrated on an H100, whose
*measured* copy bandwidth (2.42 TB/s) and bf16 GEMM peak (784 TFLOPS) are 72% and 79% of the datasheet
values; ``achieved_*`` scales every other device by the same ratios, an estimate until it is calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass

# H100 measured / datasheet (sim/data/h100_kernel_times.json): carried over to other devices as an estimate
BANDWIDTH_EFFICIENCY = 2.42e12 / 3.35e12
FLOPS_EFFICIENCY = 784.4e12 / 989e12


@dataclass(frozen=True, slots=True)
class Gpu:
    name: str
    memory_bytes: float  # as the runtime reports it (torch total_memory), per device
    hbm_bandwidth_bps: float  # datasheet peak
    bf16_flops: float  # dense
    fp8_flops: float | None  # dense; None where the device has no FP8 tensor cores
    interconnect_bps: float  # per-device scale-up bandwidth (one direction)
    interconnect: str
    max_devices_per_node: int = 8

    @property
    def achieved_bandwidth_bps(self) -> float:
        return self.hbm_bandwidth_bps * BANDWIDTH_EFFICIENCY

    @property
    def achieved_flops(self) -> float:
        return self.bf16_flops * FLOPS_EFFICIENCY


GPUS: dict[str, Gpu] = {
    g.name: g
    for g in (
        Gpu("H100", 85.52e9, 3.35e12, 989e12, 1979e12, 450e9, "NVLink 4 (900 GB/s bidirectional)"),
        Gpu("H200", 150.76e9, 4.8e12, 989e12, 1979e12, 450e9, "NVLink 4 (900 GB/s bidirectional)"),
        Gpu("B200", 192.27e9, 8.0e12, 2250e12, 4500e12, 900e9, "NVLink 5 (1.8 TB/s bidirectional)"),
        Gpu("A100", 85.9e9, 2.039e12, 312e12, None, 300e9, "NVLink 3 (600 GB/s bidirectional)"),
        Gpu("L40S", 48.3e9, 0.864e12, 362e12, 733e12, 32e9, "PCIe Gen4 x16 (no NVLink)"),
        Gpu("MI300X", 205.8e9, 5.3e12, 1307e12, 2615e12, 448e9, "Infinity Fabric (7 x 128 GB/s links)"),
        Gpu("TPU-v6e", 34.4e9, 1.64e12, 918e12, None, 448e9, "ICI (3,584 Gbps per chip)", 256),
    )
}


def get_gpu(name: str) -> Gpu:
    """A catalogue entry by name, case-insensitive (``h100``, ``tpu-v6e``, ``v6e``)."""
    key = name.strip().lower().replace("_", "-")
    for g in GPUS.values():
        if key in (g.name.lower(), g.name.lower().removeprefix("tpu-")):
            return g
    raise ValueError(f"unknown GPU {name!r}; known: {', '.join(GPUS)}")
