"""Replay and restart against a real ``lanterna sim`` with ``replay_endpoint``, and active-active agreement.

Two independent index replicas follow one sim: replica R sees the publisher through a lossy relay (it
drops one chosen message, a deterministic gap), replica D subscribes directly. R must recover the lost
message from the sim's replay ROUTER, survive the sim restarting (sequence reset) on the same ports,
and after every step both replicas must hold the same index and give the same score for every prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from lanterna.kvindex.index import KVIndex
from lanterna.kvindex.tokenization import TokenizerPool
from lanterna.kvindex.zmq_source import KVEventSubscriberManager
from lanterna.protocol.kv_events import decode_seq
from tests.conftest import free_port
from tests.integration.vllm_server import BLOCK_SIZE, SERVED_NAME, ServerHandle, http, start_sim

pytestmark = pytest.mark.integration
MODEL = SERVED_NAME


class LossyRelay:
    """SUB from the sim, PUB to a replica; forwards frames verbatim except the one it is told to drop."""

    def __init__(self, ctx: zmq.asyncio.Context, upstream: str) -> None:
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RECONNECT_IVL, 50)
        self.sub.setsockopt_string(zmq.SUBSCRIBE, "kv@")
        self.sub.connect(upstream)
        self.port = free_port()
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(f"tcp://127.0.0.1:{self.port}")
        self.drop_next = False
        self.dropped: list[int] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            frames = await self.sub.recv_multipart()
            if self.drop_next:
                self.drop_next = False
                self.dropped.append(decode_seq(frames[1]))
                continue
            await self.pub.send_multipart(frames)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.sub.close(0)
        self.pub.close(0)


@contextlib.contextmanager
def sim_with_replay(model_dir: Path, tmp_path: Path, port: int, kv_port: int, replay_port: int) -> Iterator[ServerHandle]:
    cfg = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{kv_port}",
           "replay_endpoint": f"tcp://*:{replay_port}", "topic": f"kv@127.0.0.1:{port}@{MODEL}"}
    with start_sim(model_dir, port=port, num_gpu_blocks=64, log_dir=tmp_path,
                   extra_args=["--kv-events-config", json.dumps(cfg)]) as h:
        yield h


def complete(srv: ServerHandle, prompt: str, max_tokens: int = 2) -> None:
    res = http(srv.base_url, "/v1/completions", {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens})
    assert res.status == 200, res.body[:300]


def prompt(tag: str, words: int = 200) -> str:
    return f"{tag}: " + " ".join(f"{tag}{i % 13}" for i in range(words))


async def until_applied(mgrs: list[KVEventSubscriberManager], eid: str, srv: ServerHandle, what: str,
                        done: Any) -> None:
    """Send small requests until ``done()`` holds (beats ZMQ's slow joiner after a (re)connect)."""
    async with asyncio.timeout(30):
        n = 0
        while not done():
            n += 1
            await asyncio.to_thread(complete, srv, f"{what} {n} " + "w " * 40, 1)
            with contextlib.suppress(TimeoutError):
                await mgrs[0].wait_until(done, 0.5)


async def in_sync(r: KVEventSubscriberManager, d: KVEventSubscriberManager, eid: str) -> None:
    await r.wait_until(lambda: r.last_seq(eid) >= d.last_seq(eid) >= 0)
    await d.wait_until(lambda: d.last_seq(eid) >= r.last_seq(eid))


def assert_agree(r: KVEventSubscriberManager, d: KVEventSubscriberManager, eid: str, prompts: list[Any]) -> None:
    assert r.index._gpu == d.index._gpu  # same keys, same holders
    for t in prompts:
        assert r.index.match(MODEL, None, t, [eid]) == d.index.match(MODEL, None, t, [eid])


async def test_sim_gap_replayed_restart_and_replicas_agree(tiny_model_dir: Path, tmp_path: Path) -> None:
    port, kv_port, replay_port = free_port(), free_port(), free_port()
    replay = f"tcp://127.0.0.1:{replay_port}"
    eid = f"127.0.0.1:{port}"
    ctx = zmq.asyncio.Context()
    pool = TokenizerPool({MODEL: tiny_model_dir})
    r = KVEventSubscriberManager(KVIndex(), ctx=ctx)  # behind the lossy relay
    d = KVEventSubscriberManager(KVIndex(), ctx=ctx)  # direct
    relay = LossyRelay(ctx, f"tcp://127.0.0.1:{kv_port}")
    try:
        with sim_with_replay(tiny_model_dir, tmp_path, port, kv_port, replay_port) as srv:
            await r.add_endpoint(eid, f"tcp://127.0.0.1:{relay.port}", MODEL, replay)
            await d.add_endpoint(eid, f"tcp://127.0.0.1:{kv_port}", MODEL, replay)
            await until_applied([r, d], eid, srv, "warm-up", lambda: min(r.last_seq(eid), d.last_seq(eid)) >= 0)

            # 1. a gap: the relay loses the message with alpha's blocks; the next message reveals it
            p1, p2 = prompt("alpha"), prompt("beta")
            t1, t2 = await pool.tokenize_prompt(MODEL, p1), await pool.tokenize_prompt(MODEL, p2)
            assert t1 is not None and t2 is not None
            replays = r.applier.counters.num_replays
            relay.drop_next = True
            await asyncio.to_thread(complete, srv, p1)
            await d.wait_until(lambda: d.index.match(MODEL, None, t1, [eid])[eid] > 0)
            await asyncio.to_thread(complete, srv, p2)
            await in_sync(r, d, eid)
            assert relay.dropped, "the relay dropped nothing"
            want = float(len(t1) // BLOCK_SIZE)
            assert r.index.match(MODEL, None, t1, [eid]) == {eid: want}  # recovered from the ROUTER
            assert r.applier.counters.num_replays == replays + 1
            assert r.applier.counters.num_resyncs_without_replay == 0 and not r.applier.counters.malformed
            assert_agree(r, d, eid, [t1, t2])

            # 2. more traffic, including evictions (64-block cache), keeps the replicas identical
            for i in range(4):
                await asyncio.to_thread(complete, srv, prompt(f"fill{i}", 300))
            await in_sync(r, d, eid)
            assert_agree(r, d, eid, [t1, t2])
        assert r.index.num_blocks(eid) > 0

        # 3. the sim restarts on the same ports: sequence back to 0, its cache empty
        with sim_with_replay(tiny_model_dir, tmp_path, port, kv_port, replay_port) as srv2:
            restarts = (r.applier.counters.num_restarts, d.applier.counters.num_restarts)
            await until_applied([r, d], eid, srv2, "after restart",
                                lambda: r.applier.counters.num_restarts > restarts[0]
                                and d.applier.counters.num_restarts > restarts[1]
                                and min(r.last_seq(eid), d.last_seq(eid)) >= 0)
            p3 = prompt("gamma")
            t3 = await pool.tokenize_prompt(MODEL, p3)
            assert t3 is not None
            await asyncio.to_thread(complete, srv2, p3)
            await d.wait_until(lambda: d.index.match(MODEL, None, t3, [eid])[eid] > 0)
            await in_sync(r, d, eid)
            for m in (r, d):  # the old engine's blocks are gone, the new engine's are there
                assert m.index.match(MODEL, None, t1, [eid]) == {eid: 0.0}
                assert m.index.match(MODEL, None, t3, [eid]) == {eid: float(len(t3) // BLOCK_SIZE)}
            assert_agree(r, d, eid, [t1, t2, t3])
    finally:
        for m in (r, d):
            await m.close()
        await relay.close()
        pool.close()
        ctx.destroy(linger=0)
