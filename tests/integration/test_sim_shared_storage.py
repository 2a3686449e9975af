"""Two ``lanterna sim`` processes sharing vLLM's filesystem KV tier (one ``root_dir``): a prompt replica A
computed and offloaded is a prefix-cache hit on replica B, B announces storage-medium KV events, and an
index that knows both mount the same storage credits B before B ever served the prompt."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from lanterna.kvindex.index import KVIndex
from lanterna.kvindex.tokenization import TokenizerPool
from lanterna.kvindex.zmq_source import KVEventSubscriberManager
from tests.conftest import free_port
from tests.integration.vllm_server import (
    SERVED_NAME,
    KvEventSubscriber,
    ServerHandle,
    http,
    start_sim,
    subscribe_ready,
)

pytestmark = pytest.mark.integration
MODEL = SERVED_NAME
BLOCK = 32  # the integration block size (vllm_server.BLOCK_SIZE)


def complete(srv: ServerHandle, prompt: str) -> int:
    """Serve one prompt; returns usage.prompt_tokens_details.cached_tokens."""
    res = http(srv.base_url, "/v1/completions", {"model": MODEL, "prompt": prompt, "max_tokens": 1})
    assert res.status == 200, res.body[:300]
    body: dict[str, Any] = json.loads(res.body)
    return int((body["usage"].get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


def prompt(tag: str, words: int = 300) -> str:
    return f"{tag}: " + " ".join(f"{tag}{i % 23}" for i in range(words))


async def subscribed(mgr: KVEventSubscriberManager, eid: str, srv: ServerHandle) -> None:
    """Beat ZMQ's slow joiner: one-block requests until the index has applied an event from ``srv``."""
    async with asyncio.timeout(30):
        n = 0
        while mgr.last_seq(eid) < 0:
            n += 1
            await asyncio.to_thread(complete, srv, f"warm-up {n} " + "x " * 40)
            with contextlib.suppress(TimeoutError):
                await mgr.wait_applied(eid, 0, timeout_s=0.5)


def tier_args(root: Path, seed: int) -> list[str]:
    cfg = {"kv_connector": "OffloadingConnector", "kv_role": "kv_both",
           "kv_connector_extra_config": {"cpu_bytes_to_use": 4 * BLOCK * 131072, "spec_name": "TieringOffloadingSpec",
                                         "block_size": BLOCK,
                                         "secondary_tiers": [{"type": "fs", "root_dir": str(root)}]}}
    # different --seed per replica (as the launcher does): PYTHONHASHSEED alone must align the hashes
    return ["--kv-transfer-config", json.dumps(cfg), "--num-storage-blocks", "4096", "--seed", str(seed),
            "--time-scale", "0"]


async def test_block_offloaded_by_one_replica_is_a_hit_on_another(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONHASHSEED", "7")
    root = tmp_path / "kv"
    pool = TokenizerPool({MODEL: tiny_model_dir})
    mgr = KVEventSubscriberManager(KVIndex())
    try:
        with contextlib.ExitStack() as stack:
            a, b = (stack.enter_context(start_sim(tiny_model_dir, port=free_port(), kv_events_port=free_port(),
                                                  num_gpu_blocks=64, extra_args=tier_args(root, seed),
                                                  log_dir=tmp_path))
                    for seed in (1, 2))
            raw_b = KvEventSubscriber(b.zmq_endpoint or "")
            stack.callback(raw_b.close)
            await asyncio.to_thread(subscribe_ready, b.base_url, raw_b)
            ea, eb = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
            for eid, srv in ((ea, a), (eb, b)):
                await mgr.add_endpoint(eid, srv.zmq_endpoint or "", MODEL, storage="shared-fs")
                await subscribed(mgr, eid, srv)
            p = prompt("shared")
            toks = await pool.tokenize_prompt(MODEL, p)
            assert toks is not None
            want = (len(toks) - 1) // BLOCK * BLOCK  # whole blocks; the last token is always recomputed

            # 1. A computes the prompt, then other prompts push it out of A's 64 GPU blocks (and 4 CPU blocks)
            assert await asyncio.to_thread(complete, a, p) == 0
            for i in range(6):
                await asyncio.to_thread(complete, a, prompt(f"fill-a{i}"))
            assert any(root.rglob("*")), "A wrote no block files"
            # the index knows A offloaded to the mount B shares: B is credited (at the storage weight)
            await mgr.wait_until(lambda: mgr.index.match(MODEL, None, toks, [eb])[eb] > 0, timeout_s=20)
            scores = mgr.index.match(MODEL, None, toks, [ea, eb])
            assert scores[ea] == scores[eb] == pytest.approx(0.4 * (len(toks) // BLOCK))  # storage weight 0.4

            # 2. B has never seen the prompt, yet its prefix comes from the shared directory
            assert await asyncio.to_thread(complete, b, p) == want > 0

            # 3. B's own evictions are written to the shared tier and announced with the storage medium
            for i in range(6):
                await asyncio.to_thread(complete, b, prompt(f"fill-b{i}"))
            events = await asyncio.to_thread(
                raw_b.events_until, lambda evs: any(e.get("medium") == "SHARED_STORAGE" for e in evs))
            media = {(e.get("type"), e.get("medium")) for e in events}
            assert ("BlockStored", "SHARED_STORAGE") in media and ("BlockStored", "CPU") in media
            assert not list(root.rglob("*.tmp"))  # every write was renamed into place
    finally:
        await mgr.close()
        pool.close()
