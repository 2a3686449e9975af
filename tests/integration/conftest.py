"""Integration fixtures: the tiny model, one shared real-vLLM server, the simulator, vLLM availability.

``vllm``-marked tests skip when vLLM is not installed, unless ``LANTERNA_REQUIRE_VLLM=1`` (then they fail, so CI
cannot silently lose its ground truth). vLLM takes 30-46 s to start, so one session-scoped server (KV events
and LoRA ``lora1`` on) is shared by every module; tests keep prompts unique instead of resetting caches.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.vllm_server import (
    MODEL_CACHE,
    ServerHandle,
    ensure_tiny_model,
    start_sim,
    start_vllm,
    vllm_python,
    vllm_required,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if vllm_python() is not None or vllm_required():
        return
    skip = pytest.mark.skip(reason="real vLLM not installed (scripts/setup_vllm_cpu.sh or LANTERNA_VLLM_PYTHON)")
    for item in items:
        if "vllm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny model in ``.cache/tiny-model`` (built once, reused; file lock against parallel sessions)."""
    MODEL_CACHE.parent.mkdir(parents=True, exist_ok=True)
    with open(MODEL_CACHE.parent / ".tiny-model.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return ensure_tiny_model(MODEL_CACHE, lora_names=("lora1",))


@pytest.fixture(scope="session")
def lora1(tiny_model_dir: Path) -> Path:
    """The PEFT LoRA adapter ``lora1`` (r=8, q_proj/v_proj) next to the tiny model."""
    return tiny_model_dir.parent / "lora1"


@pytest.fixture(scope="session")
def vllm_tiny(tiny_model_dir: Path, lora1: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """One real vLLM for the session: tiny model, KV events on ZMQ, LoRA ``lora1``, 16 MiB KV cache (128 blocks)."""
    if vllm_python() is None:
        if vllm_required():
            pytest.fail("LANTERNA_REQUIRE_VLLM=1 but vLLM is not installed")
        pytest.skip("real vLLM not installed")
    with start_vllm(tiny_model_dir, port=free_port(), kv_events_port=free_port(),
                    lora_modules={"lora1": lora1}, log_dir=tmp_path_factory.mktemp("vllm")) as handle:
        yield handle


@pytest.fixture(scope="session")
def sim_tiny(tiny_model_dir: Path, lora1: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """One ``lanterna sim`` for the session, configured like ``vllm_tiny`` (128 blocks, KV events, ``lora1``)."""
    with start_sim(tiny_model_dir, port=free_port(), kv_events_port=free_port(), num_gpu_blocks=128,
                   lora_modules={"lora1": lora1}, log_dir=tmp_path_factory.mktemp("sim")) as handle:
        yield handle
