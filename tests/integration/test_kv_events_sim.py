"""Precise prefix routing against ``lanterna sim`` over real ZMQ: routing, isolation, eviction, restart,
and two independent gateway-side index replicas that must agree on every score."""

from __future__ import annotations

import asyncio
import contextlib
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
from tests.integration.vllm_server import SERVED_NAME, ServerHandle, http, start_sim

pytestmark = pytest.mark.integration
MODEL = SERVED_NAME


def complete(srv: ServerHandle, prompt: str, max_tokens: int = 2) -> dict[str, Any]:
    res = http(srv.base_url, "/v1/completions", {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens})
    assert res.status == 200, res.body[:300]
    body = res.json()
    assert isinstance(body, dict)
    return body


def cached_tokens(body: dict[str, Any]) -> int:
    return int((body["usage"].get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


@contextlib.contextmanager
def sim(tiny_model_dir: Path, tmp_path: Path, *, port: int | None = None, kv_port: int | None = None,
        blocks: int = 64) -> Iterator[ServerHandle]:
    with start_sim(tiny_model_dir, port=port or free_port(), kv_events_port=kv_port or free_port(),
                   num_gpu_blocks=blocks, log_dir=tmp_path) as h:
        yield h


async def subscribe(mgrs: list[KVEventSubscriberManager], srv: ServerHandle) -> None:
    """Subscribe every replica, then beat the slow joiner with one-block warm-up requests."""
    eid = f"127.0.0.1:{srv.port}"
    for m in mgrs:
        await m.add_endpoint(eid, srv.zmq_endpoint or "", MODEL)
    async with asyncio.timeout(30):
        n = 0
        while any(m.last_seq(eid) < 0 for m in mgrs):
            n += 1
            await asyncio.to_thread(complete, srv, f"warm-up {n} " + "x " * 40, 1)
            with contextlib.suppress(TimeoutError):
                for m in mgrs:
                    await m.wait_applied(eid, 0, timeout_s=0.5)


def prompt(tag: str, words: int = 200) -> str:
    return f"{tag}: " + " ".join(f"{tag}{i % 17}" for i in range(words))


async def test_precise_routing_isolation_eviction_restart_replicas(tiny_model_dir: Path, tmp_path: Path) -> None:
    pool = TokenizerPool({MODEL: tiny_model_dir})
    replicas = [KVEventSubscriberManager(KVIndex()) for _ in range(2)]
    main = replicas[0]
    scorer = build("precise-prefix-cache-scorer", "p", {}, SchedulerServices(kv_index=main.index))
    kv_a = free_port()
    port_a = free_port()
    try:
        with contextlib.ExitStack() as stack:
            a = stack.enter_context(sim(tiny_model_dir, tmp_path, port=port_a, kv_port=kv_a))
            b = stack.enter_context(sim(tiny_model_dir, tmp_path))
            for srv in (a, b):
                await subscribe(replicas, srv)
            ea, eb = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
            eps = [Endpoint(id=ea, address=ea), Endpoint(id=eb, address=eb)]

            # 1. a request to B puts B's blocks in the index, and only B's
            p1 = prompt("alpha")
            toks = await pool.tokenize_prompt(MODEL, p1)
            assert toks is not None
            first = await asyncio.to_thread(complete, b, p1)
            assert cached_tokens(first) == 0
            await main.wait_until(lambda: main.index.match(MODEL, None, toks, [eb])[eb] > 0)
            want = len(toks) // 32
            assert main.index.match(MODEL, None, toks, [ea, eb]) == {ea: 0.0, eb: float(want)}

            # 2. a second request sharing the prefix is routed to B, whose cache then hits
            p2 = p1 + " and a different ending"
            t2 = await pool.tokenize_prompt(MODEL, p2)
            scores = scorer.score(SchedRequest("r2", MODEL, token_ids=t2), eps)  # type: ignore[attr-defined]
            best = max(eps, key=lambda e: scores.get(e.id, 0.0))
            assert best.id == eb and scores[eb] > 0.5 and scores.get(ea, 0.0) == 0.0
            second = await asyncio.to_thread(complete, b, p2)
            assert cached_tokens(second) >= 32 * int(scores[eb] * (len(t2) // 32)) - 32 > 0

            # 3. events from A land on A only
            p3 = prompt("beta")
            t3 = await pool.tokenize_prompt(MODEL, p3)
            await asyncio.to_thread(complete, a, p3)
            await main.wait_until(lambda: main.index.match(MODEL, None, t3, [ea])[ea] > 0)
            assert main.index.match(MODEL, None, t3, [eb])[eb] == 0.0

            # 4. eviction: fill B's 64-block cache with other prompts -> BlockRemoved drops alpha
            for i in range(8):
                await asyncio.to_thread(complete, b, prompt(f"fill{i}", 300))
            await main.wait_until(lambda: main.index.match(MODEL, None, toks, [eb])[eb] < want)
            assert main.applier.counters.events["BlockRemoved"] > 0

            # 5. replicas fed the same events agree on every score
            for m in replicas[1:]:
                await m.wait_until(lambda m=m: all(m.last_seq(e) == main.last_seq(e) for e in (ea, eb)))
            for t in (toks, t2, t3):
                assert all(m.index.match(MODEL, None, t, [ea, eb]) == main.index.match(MODEL, None, t, [ea, eb])
                           for m in replicas[1:])

            # 6. publisher restart: A comes back on the same ports with sequence 0 and an empty cache
            stack.close()
        with sim(tiny_model_dir, tmp_path, port=port_a, kv_port=kv_a) as a2:
            before = main.applier.counters.num_restarts
            async with asyncio.timeout(30):
                n = 0
                while main.applier.counters.num_restarts == before:
                    n += 1
                    await asyncio.to_thread(complete, a2, f"after restart {n} " + "y " * 40, 1)
                    with contextlib.suppress(TimeoutError):
                        await main.wait_until(lambda: main.applier.counters.num_restarts > before, 0.5)
            assert main.index.match(MODEL, None, t3, [ea])[ea] == 0.0  # the old engine's blocks are gone
    finally:
        for m in replicas:
            await m.close()
        pool.close()
