"""vLLM flags and environment for KV offload tiers (PROTOCOLS.md section 8), from a short description.

One pure function, ``vllm_offload_args``, is the single place that knows vLLM's offload wire format, so
``lanterna offload vllm-args``, ``lanterna up --endpoint`` docs and a Helm chart all emit the same bytes:

- CPU tier: ``OffloadingConnector`` with ``cpu_bytes_to_use`` (vLLM's default ``CPUOffloadingSpec``).
- CPU + filesystem: the same connector with ``spec_name: TieringOffloadingSpec``, an offload ``block_size``
  (tokens per file; a multiple of vLLM's ``--block-size``) and ``secondary_tiers: [{type: fs, root_dir, ...}]``.
- ``PYTHONHASHSEED`` fixed: pods that share files must compute the same block hashes, and vLLM seeds its
  chain hash from it for non-cryptographic hash algorithms (the file name is the block hash).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

OFFLOADING_CONNECTOR = "OffloadingConnector"
TIERING_SPEC = "TieringOffloadingSpec"
FS_TIER_TYPE = "fs"
DEFAULT_FS_BLOCK_SIZE = 256  # tokens per offloaded file; llm-d's FS guide and PROTOCOLS.md section 8
DEFAULT_FS_THREADS = 16  # vLLM's FileSystemTierManager defaults (n_read_threads / n_write_threads)
DEFAULT_HASH_SEED = "0"
GIB = 1 << 30


class OffloadArgsError(ValueError):
    """A description vLLM would reject; the message is one line for stderr."""


@dataclass(frozen=True, slots=True)
class FsTier:
    """A shared-filesystem tier: every pod mounting ``root_dir`` reads the others' blocks."""

    root_dir: str
    n_read_threads: int = DEFAULT_FS_THREADS
    n_write_threads: int = DEFAULT_FS_THREADS
    enable_kv_events: bool = False  # per-tier BlockStored (medium STORAGE); needs --kv-events-config too


@dataclass(frozen=True, slots=True)
class OffloadSpec:
    """The short description: CPU bytes (total over TP ranks, as vLLM counts), optional fs tier."""

    cpu_bytes: int
    fs: FsTier | None = None
    block_size: int | None = None  # tokens per offloaded block; None = GPU block size (CPU) / 256 (fs)
    hash_seed: str = DEFAULT_HASH_SEED


@dataclass(frozen=True, slots=True)
class VllmOffloadArgs:
    """What to add to ``vllm serve``: ``flags`` (argv items, already split) and ``env``."""

    flags: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    kv_transfer_config_json: str = ""  # the ``--kv-transfer-config`` value, compact JSON

    def shell(self) -> str:
        """Bash: ``export`` lines plus an array to splice into ``vllm serve MODEL "${VLLM_OFFLOAD_ARGS[@]}"``."""
        lines = [f"export {k}={shlex.quote(v)}" for k, v in self.env.items()]
        lines.append("VLLM_OFFLOAD_ARGS=(" + " ".join(shlex.quote(f) for f in self.flags) + ")")
        return "\n".join(lines) + "\n"

    def json(self) -> str:
        doc = {"flags": list(self.flags), "env": self.env,
               "kv_transfer_config": json.loads(self.kv_transfer_config_json)}
        return json.dumps(doc, indent=2) + "\n"

    def helm(self) -> str:
        """A container-spec fragment (``args`` + ``env``) that any chart's vLLM container can take verbatim."""
        out = ["args:"]
        out += [f"  - {json.dumps(f)}" for f in self.flags]
        out.append("env:")
        for k, v in self.env.items():
            out += [f"  - name: {k}", f"    value: {json.dumps(v)}"]
        return "\n".join(out) + "\n"


def gib_to_bytes(gib: float) -> int:
    """GiB as vLLM's ``--kv-offloading-size`` counts them (``size * (1 << 30)``)."""
    return int(gib * GIB)


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or value <= 0:
        raise OffloadArgsError(f"{name} must be a positive integer, got {value!r}")


def kv_transfer_config(spec: OffloadSpec) -> dict[str, object]:
    """The ``--kv-transfer-config`` object; key order is fixed so the JSON is byte-stable."""
    _check_positive("cpu bytes", spec.cpu_bytes)
    extra: dict[str, object] = {"cpu_bytes_to_use": spec.cpu_bytes}
    block_size = spec.block_size
    if spec.fs is not None:
        block_size = block_size or DEFAULT_FS_BLOCK_SIZE
        if not spec.fs.root_dir:
            raise OffloadArgsError("fs tier root_dir must not be empty")
        _check_positive("fs read threads", spec.fs.n_read_threads)
        _check_positive("fs write threads", spec.fs.n_write_threads)
        tier: dict[str, object] = {"type": FS_TIER_TYPE, "root_dir": spec.fs.root_dir,
                                   "n_read_threads": spec.fs.n_read_threads,
                                   "n_write_threads": spec.fs.n_write_threads}
        if spec.fs.enable_kv_events:
            tier["enable_kv_events"] = True
        extra = {"spec_name": TIERING_SPEC, **extra, "block_size": block_size, "secondary_tiers": [tier]}
    elif block_size is not None:
        extra["block_size"] = block_size
    if block_size is not None:
        _check_positive("block size", block_size)
    return {"kv_connector": OFFLOADING_CONNECTOR, "kv_role": "kv_both", "kv_connector_extra_config": extra}


def vllm_offload_args(spec: OffloadSpec) -> VllmOffloadArgs:
    """The flags and environment for ``spec``; raises ``OffloadArgsError`` on values vLLM would reject."""
    cfg = json.dumps(kv_transfer_config(spec), separators=(",", ":"))
    return VllmOffloadArgs(flags=("--kv-transfer-config", cfg), env={"PYTHONHASHSEED": spec.hash_seed},
                           kv_transfer_config_json=cfg)
