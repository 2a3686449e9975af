"""What to run for a chosen candidate: ``vllm serve`` per replica, ``lanterna up`` over them, the
``lanterna deploy render`` line for this repository's manifests, and Helm values.

The Helm values follow the llm-d ``llm-d-modelservice`` chart's layout (``modelArtifacts``, ``decode`` /
``prefill`` with ``replicas``, ``parallelism`` and container ``args``), so the numbers transfer as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from lanterna.planner.search import Candidate


@dataclass(frozen=True, slots=True)
class Deployment:
    model: str  # Hugging Face id or path vLLM loads
    candidate: Candidate
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    base_port: int = 8100

    @property
    def num_prefill(self) -> int:
        s = self.candidate.shape
        return min(self.candidate.replicas - 1, max(1, round(self.candidate.replicas * s.prefill_share))) \
            if s.prefill_share else 0

    def vllm_args(self) -> list[str]:
        s = self.candidate.shape
        args = ["--tensor-parallel-size", str(s.tp), "--gpu-memory-utilization", str(self.gpu_memory_utilization),
                "--max-num-seqs", str(self.max_num_seqs), "--max-num-batched-tokens", str(self.max_num_batched_tokens),
                "--block-size", str(self.block_size), "--enable-prefix-caching"]
        if s.ep:
            args += ["--enable-expert-parallel", "--data-parallel-size", str(self.candidate.replicas)]
        if s.cpu_offload_gib:
            args += ["--kv-offloading-backend", "native", "--kv-offloading-size", f"{s.cpu_offload_gib:g}"]
        return args

    def vllm_commands(self) -> list[str]:
        """One ``vllm serve`` per replica (a wide-EP deployment is one multi-rank server per node in practice)."""
        n = 1 if self.candidate.shape.ep else self.candidate.replicas
        base = " ".join(self.vllm_args())
        return [f"vllm serve {self.model} --port {self.base_port + i} {base}" for i in range(n)]

    def lanterna_up(self) -> str:
        n = 1 if self.candidate.shape.ep else self.candidate.replicas
        eps = " ".join(f"--endpoint 127.0.0.1:{self.base_port + i}" for i in range(n))
        return f"lanterna up {eps}"

    def deploy_render(self) -> str:
        """``lanterna deploy render`` (this repository's Kubernetes manifests) for the same shape."""
        s, parts = self.candidate.shape, ["lanterna deploy render", f"--model {self.model}"]
        prefill = self.num_prefill
        parts.append(f"--vllm-replicas {1 if s.ep else self.candidate.replicas - prefill}")
        if prefill:
            parts += ["--pd", f"--prefill-replicas {prefill}"]
        if s.cpu_offload_gib:
            parts.append(f"--cpu-offload-gib {s.cpu_offload_gib:g}")
        line = " ".join(parts)
        if s.tp > 1 or s.ep:
            gpus = s.tp * (self.candidate.replicas if s.ep else 1)
            line += (f"\n# each vLLM pod: {gpus} GPUs and `{' '.join(self.vllm_args()[:2])}`"
                     + (f" --enable-expert-parallel --data-parallel-size {self.candidate.replicas}" if s.ep else "")
                     + " (not render flags yet)")
        return line

    def helm_values(self) -> str:
        c, s = self.candidate, self.candidate.shape
        prefill = self.num_prefill
        decode_args = self.vllm_args()
        values: dict[str, object] = {
            "modelArtifacts": {"uri": f"hf://{self.model}"},
            "decode": {"replicas": 1 if s.ep else c.replicas - prefill,
                       "parallelism": {"tensor": s.tp, **({"data": c.replicas} if s.ep else {})},
                       "containers": [{"name": "vllm", "args": decode_args,
                                       "resources": {"limits": {"nvidia.com/gpu": s.tp}}}]},
            "prefill": {"create": bool(prefill), **({
                "replicas": prefill, "parallelism": {"tensor": s.tp},
                "containers": [{"name": "vllm", "args": decode_args,
                                "resources": {"limits": {"nvidia.com/gpu": s.tp}}}]} if prefill else {})},
        }
        return yaml.safe_dump(values, sort_keys=False)
