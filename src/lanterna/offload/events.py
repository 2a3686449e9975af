"""A blocking-free, synchronous ZMQ PUB for storage-tier KV events, wire-identical to vLLM's.

The evictor is a plain thread loop (no event loop), so it cannot use ``sim.publisher``'s asyncio socket.
Same frames: ``[topic, seq (8-byte BE, from 0), msgpack [ts, events, dp_rank]]``; a send never blocks
(ZMQ drops at the high-water mark, and ``num_dropped`` counts it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import zmq

from lanterna.protocol.kv_events import BlockHash, BlockRemoved, KVEventBatch, encode_payload, encode_seq
from lanterna.sim.publisher import binds

MAX_HASHES_PER_EVENT = 1024  # keeps one message small; vLLM itself sends one BlockRemoved per block


class StorageEventPublisher:
    """Publishes ``BlockRemoved`` for a storage medium; ``close`` releases the socket."""

    def __init__(self, endpoint: str, topic: str, medium: str, hwm: int = 100_000) -> None:
        self._ctx = zmq.Context()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.SNDHWM, hwm)
        self._pub.setsockopt(zmq.LINGER, 1000)  # a short grace so the last removals leave on close
        (self._pub.bind if binds(endpoint) else self._pub.connect)(endpoint)
        self._topic = topic.encode()
        self.medium = medium
        self._seq = 0
        self.num_published = 0
        self.num_dropped = 0

    def removed(self, hashes: Sequence[BlockHash], group_idx: int = 0) -> None:
        for i in range(0, len(hashes), MAX_HASHES_PER_EVENT):
            ev = BlockRemoved(list(hashes[i:i + MAX_HASHES_PER_EVENT]), self.medium, group_idx)
            payload = encode_payload(KVEventBatch(time.time(), [ev], None))
            try:
                self._pub.send_multipart((self._topic, encode_seq(self._seq), payload), flags=zmq.NOBLOCK)
                self.num_published += 1
            except zmq.Again:
                self.num_dropped += 1
            self._seq += 1

    def close(self) -> None:
        self._pub.close()
        self._ctx.term()
