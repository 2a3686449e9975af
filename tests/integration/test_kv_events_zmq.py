"""KVEventSubscriberManager over real ZMQ sockets: ordering, two publishers, replay, bad input, restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
import zmq
import zmq.asyncio

from lanterna.kvindex.index import KVIndex
from lanterna.kvindex.zmq_source import KVEventSubscriberManager
from lanterna.protocol.kv_events import (
    REPLAY_END_SEQ,
    BlockStored,
    KVEventBatch,
    encode_payload,
    encode_seq,
)
from tests.conftest import free_port

pytestmark = pytest.mark.integration
BS = 4
TOKS = list(range(200, 264))


class Publisher:
    """A vLLM-like PUB (+ optional replay ROUTER keeping every message)."""

    def __init__(self, ctx: zmq.asyncio.Context, replay: bool = False) -> None:
        self.port = free_port()
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(f"tcp://127.0.0.1:{self.port}")
        self.topic = f"kv@127.0.0.1:{self.port}@m".encode()
        self.sent: list[tuple[int, bytes]] = []
        self.seq = 0
        self.router = None
        self.num_replays_served = 0
        if replay:
            self.replay_port = free_port()
            self.router = ctx.socket(zmq.ROUTER)
            self.router.setsockopt(zmq.LINGER, 0)
            self.router.bind(f"tcp://127.0.0.1:{self.replay_port}")

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    async def send(self, *events: object, skip: bool = False) -> int:
        payload = encode_payload(KVEventBatch(1.0, list(events), 0))  # type: ignore[arg-type]
        seq = self.seq
        self.seq += 1
        self.sent.append((seq, payload))
        if not skip:
            await self.pub.send_multipart([self.topic, encode_seq(seq), payload])
        return seq

    async def serve_replays(self) -> None:
        assert self.router is not None
        while True:
            await self._serve_one()

    async def _serve_one(self) -> None:
        assert self.router is not None
        ident, _, start = await self.router.recv_multipart()
        self.num_replays_served += 1
        first = int.from_bytes(start, "big")
        for seq, payload in self.sent:
            if seq >= first:
                await self.router.send_multipart([ident, b"", self.topic, encode_seq(seq), payload])
        await self.router.send_multipart([ident, b"", self.topic, encode_seq(REPLAY_END_SEQ), b""])

    def close(self) -> None:
        self.pub.close(0)
        if self.router is not None:
            self.router.close(0)


@pytest.fixture
async def ctx() -> AsyncIterator[zmq.asyncio.Context]:
    c = zmq.asyncio.Context()
    yield c
    c.destroy(linger=0)


async def connected(mgr: KVEventSubscriberManager, pub: Publisher, eid: str) -> None:
    """Beat the slow joiner: publish a one-block probe until the subscriber has applied something."""
    async with asyncio.timeout(10):
        while mgr.last_seq(eid) < 0:
            await pub.send(BlockStored([999_000 + pub.seq], None, [9, 9, 9, pub.seq], BS))
            try:
                await mgr.wait_applied(eid, 0, timeout_s=0.2)
            except TimeoutError:
                pass


def score(mgr: KVEventSubscriberManager, eid: str, toks: list[int] = TOKS) -> float:
    return mgr.index.match("m", None, toks, [eid])[eid]


async def test_two_publishers_kept_apart_and_removal_clears(ctx: zmq.asyncio.Context) -> None:
    a, b = Publisher(ctx), Publisher(ctx)
    mgr = KVEventSubscriberManager(KVIndex(), ctx=ctx)
    try:
        await mgr.add_endpoint("a", a.endpoint, "m")
        await mgr.add_endpoint("b", b.endpoint, "m")
        await connected(mgr, a, "a")
        await connected(mgr, b, "b")
        await a.send(BlockStored([1, 2, 3], None, TOKS[:12], BS))
        s = await b.send(BlockStored([1, 2], None, TOKS[:8], BS))  # same vLLM hashes, other server
        await mgr.wait_applied("b", s)
        await mgr.wait_applied("a", a.seq - 1)
        assert score(mgr, "a") == 3 and score(mgr, "b") == 2
        await mgr.remove_endpoint("a")
        assert score(mgr, "a") == 0 and score(mgr, "b") == 2
    finally:
        await mgr.close()
        a.close()
        b.close()


async def test_gap_replayed_from_router(ctx: zmq.asyncio.Context) -> None:
    p = Publisher(ctx, replay=True)
    mgr = KVEventSubscriberManager(KVIndex(), ctx=ctx)
    try:
        server = asyncio.create_task(p.serve_replays())
        await mgr.add_endpoint("a", p.endpoint, "m", replay_endpoint=f"tcp://127.0.0.1:{p.replay_port}")
        await connected(mgr, p, "a")
        replays = mgr.applier.counters.num_replays  # a late join (first seq > 0) replays from 0
        await p.send(BlockStored([1], None, TOKS[:4], BS))
        await p.send(BlockStored([2], 1, TOKS[4:8], BS), skip=True)  # lost on the wire
        s = await p.send(BlockStored([3], 2, TOKS[8:12], BS))
        await mgr.wait_applied("a", s)
        assert score(mgr, "a") == 3
        assert mgr.applier.counters.num_replays == replays + 1
        assert p.num_replays_served == mgr.applier.counters.num_replays
        assert not mgr.applier.counters.malformed
        server.cancel()
    finally:
        await mgr.close()
        p.close()


async def test_garbage_and_flood_do_not_hurt_neighbours(ctx: zmq.asyncio.Context) -> None:
    bad, good = Publisher(ctx), Publisher(ctx)
    mgr = KVEventSubscriberManager(KVIndex(capacity=10_000, map_capacity=500), ctx=ctx, max_batch=64)
    try:
        await mgr.add_endpoint("bad", bad.endpoint, "m")
        await mgr.add_endpoint("good", good.endpoint, "m")
        await connected(mgr, bad, "bad")
        await connected(mgr, good, "good")
        s = await good.send(BlockStored([1, 2, 3, 4], None, TOKS[:16], BS))
        await bad.pub.send_multipart([bad.topic, b"\x01"])  # wrong frame count
        await bad.pub.send_multipart([bad.topic, encode_seq(bad.seq), b"\xc1garbage"])
        bad.seq += 1
        await bad.pub.send_multipart([bad.topic, encode_seq(bad.seq), msgspec.msgpack.encode([1.0, [["Nope", 1]], 0])])
        bad.seq += 1
        for i in range(2000):  # flood with distinct chains
            await bad.send(BlockStored([10_000 + i], None, [i, i, i, i], BS))
        await mgr.wait_applied("bad", bad.seq - 1)
        await mgr.wait_applied("good", s)
        assert score(mgr, "good") == 4
        assert mgr.index.num_blocks("bad") <= 500
        c = mgr.applier.counters.malformed
        assert c["frame_count"] == 1 and c["payload"] >= 1
    finally:
        await mgr.close()
        bad.close()
        good.close()


async def test_publisher_restart_resets_endpoint(ctx: zmq.asyncio.Context) -> None:
    p = Publisher(ctx)
    mgr = KVEventSubscriberManager(KVIndex(), ctx=ctx)
    try:
        await mgr.add_endpoint("a", p.endpoint, "m")
        await connected(mgr, p, "a")
        s = await p.send(BlockStored([1, 2, 3], None, TOKS[:12], BS))
        await mgr.wait_applied("a", s)
        assert score(mgr, "a") == 3
        p.seq = 0  # engine restarted: numbering starts again, old cache gone
        p.sent.clear()
        await p.send(BlockStored([7], None, TOKS[:4], BS))
        await mgr.wait_until(lambda: mgr.applier.counters.num_restarts == 1)
        assert score(mgr, "a") == 1
    finally:
        await mgr.close()
        p.close()
