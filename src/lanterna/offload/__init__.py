"""KV offload tiers: vLLM offload flags, the shared-filesystem layout and evictor, the transfer engine.

The torch-based ``transfer`` module is not imported here (the ``[torch]`` extra is optional)."""

from lanterna.offload.evict_policy import Watermarks
from lanterna.offload.layout import BlockName, StorageLayout, parse_block_file
from lanterna.offload.vllm_args import FsTier, OffloadSpec, VllmOffloadArgs, gib_to_bytes, vllm_offload_args

__all__ = ["BlockName", "FsTier", "OffloadSpec", "StorageLayout", "VllmOffloadArgs", "Watermarks", "gib_to_bytes",
           "parse_block_file", "vllm_offload_args"]
