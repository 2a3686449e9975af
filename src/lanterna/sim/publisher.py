"""ZMQ KV-event publisher, wire-identical to vLLM's (PROTOCOLS.md section 1).

Each engine step's events become one message ``[topic, seq (8-byte BE, from 0), msgpack [ts, events, dp_rank]]``
on a PUB socket. A PUB send never blocks (ZMQ drops at the high-water mark), so publishing from the event
loop is safe. The last ``buffer_steps`` messages stay in a bounded deque for the optional replay ROUTER:
a DEALER sends ``[b"", start_seq]`` and gets ``[b"", topic, seq, payload]`` for each buffered message with
``seq >= start_seq``, then ``[b"", topic, 0xFFFFFFFFFFFFFFFF, b""]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import Literal

import zmq
import zmq.asyncio

from lanterna.protocol.kv_events import REPLAY_END_SEQ, KVEvent, KVEventBatch, encode_payload, encode_seq

log = logging.getLogger(__name__)
_END = encode_seq(REPLAY_END_SEQ)


@dataclass(frozen=True, slots=True)
class PublisherConfig:
    """The parts of vLLM's ``--kv-events-config`` the publisher needs."""

    endpoint: str = "tcp://*:5557"
    topic: str = ""
    replay_endpoint: str | None = None
    buffer_steps: int = 10000
    hwm: int = 100000
    encoding: Literal["map", "array"] = "map"
    data_parallel_rank: int | None = None


def binds(endpoint: str) -> bool:
    """vLLM's rule: bind when the address has a wildcard (``*``/``::``) or is ipc/inproc, else connect."""
    return "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://"))


class KVEventPublisher:
    """Owns the PUB and replay sockets; ``publish`` is synchronous and never blocks."""

    def __init__(self, config: PublisherConfig, ctx: zmq.asyncio.Context | None = None) -> None:
        self.config = config
        self._ctx = ctx or zmq.asyncio.Context()
        self._own_ctx = ctx is None
        self._topic = config.topic.encode()
        self._seq = 0
        self._buffer: deque[tuple[bytes, bytes]] = deque(maxlen=max(1, config.buffer_steps))
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.SNDHWM, config.hwm)
        self._pub.setsockopt(zmq.LINGER, 0)
        (self._pub.bind if binds(config.endpoint) else self._pub.connect)(config.endpoint)
        self._replay: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        if config.replay_endpoint:
            self._replay = self._ctx.socket(zmq.ROUTER)
            self._replay.setsockopt(zmq.LINGER, 0)
            self._replay.bind(config.replay_endpoint)
        self.num_published = 0
        self.num_dropped = 0

    @property
    def next_seq(self) -> int:
        return self._seq

    def start(self) -> None:
        if self._replay is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._serve_replay(), name="kv-replay")

    def publish(self, events: list[KVEvent], ts: float) -> None:
        """One message per engine step; empty steps publish nothing (as vLLM)."""
        if not events:
            return
        payload = encode_payload(KVEventBatch(ts, events, self.config.data_parallel_rank), self.config.encoding)
        seq = encode_seq(self._seq)
        self._seq += 1
        self._buffer.append((seq, payload))
        try:
            self._pub.send_multipart((self._topic, seq, payload), flags=zmq.NOBLOCK, copy=False)
            self.num_published += 1
        except zmq.Again:
            self.num_dropped += 1

    async def _serve_replay(self) -> None:
        assert self._replay is not None
        sock = self._replay
        while True:
            frames = await sock.recv_multipart()
            if len(frames) < 3 or len(frames[-1]) != 8:
                log.warning("kv_replay_bad_request", extra={"num_frames": len(frames)})
                continue
            ident, start = frames[0], int.from_bytes(frames[-1], "big")
            for seq, payload in list(self._buffer):
                if int.from_bytes(seq, "big") >= start:
                    await sock.send_multipart((ident, b"", self._topic, seq, payload))
            await sock.send_multipart((ident, b"", self._topic, _END, b""))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pub.close(0)
        if self._replay is not None:
            self._replay.close(0)
        if self._own_ctx:
            self._ctx.term()
