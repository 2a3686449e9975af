"""ZMQ adapter: one SUB socket per model-server publisher, feeding an ``EventApplier``.

Each endpoint gets its own receive task (owned by the manager, cancelled on removal/close), so its
events are applied strictly in order and a flooding or broken publisher only affects itself. Messages
are drained in bounded batches (``max_batch``) and applied on the event loop: applying costs ~1 us per
block, so a batch holds the loop for well under a millisecond, and the loop gets a turn between
batches. ZMQ's receive high-water mark bounds the memory a flood can take; what it drops shows up as a
sequence gap and triggers a replay or resync. Replays use a DEALER to the publisher's ROUTER.

Shared socket (llm-d's ``kvEventsConfig.zmqEndpoint``): ``listen("tcp://*:5557")`` binds one SUB socket that
every publisher connects to (vLLM connects when its ``endpoint`` has no wildcard); an address without a wildcard
is connected to instead (one upstream, e.g. a forwarder). Endpoints are then registered with no address of their
own and each message is routed to its endpoint by topic (``kvindex.topics``); per-endpoint ordering, gaps and
replays work as with one socket each, since every publisher numbers its own messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from lanterna.kvindex.apply import EventApplier, Verdict
from lanterna.kvindex.index import KVIndex
from lanterna.kvindex.topics import TopicRouter
from lanterna.protocol.kv_events import REPLAY_END_SEQ, decode_seq, encode_seq

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Sub:
    endpoint_id: str
    zmq_endpoint: str
    replay_endpoint: str | None
    sock: zmq.asyncio.Socket | None  # None: its messages arrive on the shared socket
    task: asyncio.Task[None] | None = None
    monitor: asyncio.Task[None] | None = None
    waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)


class KVEventSubscriberManager:
    """Subscribes to every publisher and keeps ``index`` current. Use one per gateway replica.

    Calling protocol: ``await add_endpoint(...)`` when discovery reports a server (idempotent),
    ``await remove_endpoint(id)`` when it goes (its entries are cleared), ``await close()`` at shutdown.
    """

    def __init__(
        self,
        index: KVIndex | None = None,
        *,
        ctx: zmq.asyncio.Context | None = None,
        rcvhwm: int = 100_000,
        max_batch: int = 256,
        replay_timeout_s: float = 5.0,
    ) -> None:
        self.index = index if index is not None else KVIndex()
        self.applier = EventApplier(self.index)
        self._ctx = ctx or zmq.asyncio.Context.instance()
        self._subs: dict[str, _Sub] = {}
        self._rcvhwm = rcvhwm
        self._max_batch = max_batch
        self._replay_timeout_s = replay_timeout_s
        self._applied = asyncio.Event()  # set after every applied batch, for ``wait_until``
        self._shared: zmq.asyncio.Socket | None = None
        self._shared_task: asyncio.Task[None] | None = None
        self.router = TopicRouter()
        self.shared_address: str | None = None

    def listen(self, address: str, topic_filter: str = "kv@") -> None:
        """Open the shared socket: bind ``address`` when it has a wildcard (or is ipc/inproc), else connect."""
        if self._shared is not None:
            return
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt_string(zmq.SUBSCRIBE, topic_filter)
        wild = "*" in address or "::" in address or address.startswith(("ipc://", "inproc://"))
        (sock.bind if wild else sock.connect)(address)
        self._shared = sock
        self.shared_address = sock.getsockopt_string(zmq.LAST_ENDPOINT) if wild else address
        self._shared_task = asyncio.create_task(self._run_shared(sock), name="kv-sub:shared")

    @property
    def endpoints(self) -> list[str]:
        return list(self._subs)

    async def add_endpoint(
        self,
        endpoint_id: str,
        zmq_endpoint: str | None,
        model: str,
        replay_endpoint: str | None = None,
        *,
        storage: str | None = None,
        topic_filter: str = "kv@",
    ) -> None:
        """Subscribe to ``zmq_endpoint`` (e.g. ``tcp://10.0.0.5:5557``) for ``model``'s events; None: take them
        from the shared socket (``listen``), by topic."""
        if endpoint_id in self._subs:
            return
        if zmq_endpoint is None:
            self.applier.add_endpoint(endpoint_id, model, replay=replay_endpoint is not None, storage=storage)
            self._subs[endpoint_id] = _Sub(endpoint_id, "", replay_endpoint, None)
            self.router.add(endpoint_id)
            return
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt_string(zmq.SUBSCRIBE, topic_filter)
        mon = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        sock.connect(zmq_endpoint)
        self.applier.add_endpoint(endpoint_id, model, replay=replay_endpoint is not None, storage=storage)
        sub = _Sub(endpoint_id, zmq_endpoint, replay_endpoint, sock)
        self._subs[endpoint_id] = sub
        sub.task = asyncio.create_task(self._run(sub), name=f"kv-sub:{endpoint_id}")
        sub.monitor = asyncio.create_task(self._watch(sub, mon), name=f"kv-mon:{endpoint_id}")

    async def remove_endpoint(self, endpoint_id: str) -> None:
        sub = self._subs.pop(endpoint_id, None)
        if sub is None:
            return
        await self._stop(sub)
        self.router.remove(endpoint_id)
        self.applier.remove_endpoint(endpoint_id)

    async def close(self) -> None:
        for eid in list(self._subs):
            await self.remove_endpoint(eid)
        if self._shared_task is not None:
            self._shared_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._shared_task
            self._shared_task = None
        if self._shared is not None:
            self._shared.close(linger=0)
            self._shared = None

    async def wait_applied(self, endpoint_id: str, seq: int, timeout_s: float = 10.0) -> None:
        """Return once the message with sequence ``seq`` (or a later one) from the endpoint is applied."""
        st = self.applier.streams.get(endpoint_id)
        sub = self._subs.get(endpoint_id)
        if st is None or sub is None:
            raise KeyError(endpoint_id)
        if st.last_seq >= seq:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sub.waiters.append((seq, fut))
        async with asyncio.timeout(timeout_s):
            await fut

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Return once ``predicate()`` holds, re-checking after every applied batch (tests, warm-up)."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self._applied.clear()
                await self._applied.wait()

    def last_seq(self, endpoint_id: str) -> int:
        st = self.applier.streams.get(endpoint_id)
        return -1 if st is None else st.last_seq

    async def _stop(self, sub: _Sub) -> None:
        for task in (sub.task, sub.monitor):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if sub.sock is not None:
            with contextlib.suppress(zmq.ZMQError):
                sub.sock.disable_monitor()
            sub.sock.close(linger=0)
        for _, fut in sub.waiters:
            if not fut.done():
                fut.cancel()

    def _wake(self, sub: _Sub) -> None:
        self._applied.set()
        last = self.applier.streams[sub.endpoint_id].last_seq
        if not sub.waiters:
            return
        keep = []
        for seq, fut in sub.waiters:
            if seq <= last:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((seq, fut))
        sub.waiters = keep

    async def _run(self, sub: _Sub) -> None:
        """An endpoint's own socket: every message is its own."""
        assert sub.sock is not None  # only endpoints with a socket of their own get this task
        await self._pump(sub.sock, lambda _frames: sub, "kv_subscriber_failed", {"endpoint": sub.endpoint_id})

    async def _run_shared(self, sock: zmq.asyncio.Socket) -> None:
        """The shared socket: each message is routed by topic, then applied as its endpoint's own socket would.
        Unknown topics (a pod not discovered yet, or not ours) are counted and dropped."""
        router, unknown = self.router, self.applier.counters.malformed

        def route(frames: list[bytes]) -> _Sub | None:
            sub = self._route(frames, router)
            if sub is None:
                unknown["unknown_topic"] += 1
            return sub

        await self._pump(sock, route, "kv_shared_subscriber_failed", {"address": self.shared_address})

    async def _pump(self, sock: zmq.asyncio.Socket, route: Callable[[list[bytes]], _Sub | None], failed: str,
                    where: dict[str, Any]) -> None:
        """Receive in batches (up to ``max_batch`` messages already queued, then yield), apply each message to
        its endpoint, then wake that endpoint's waiters once per batch."""
        applier = self.applier
        try:
            while True:
                frames = await sock.recv_multipart()
                touched: dict[str, _Sub] = {}
                n = 0
                while True:
                    sub = route(frames)
                    if sub is not None:
                        touched[sub.endpoint_id] = sub
                        if applier.ingest(sub.endpoint_id, frames, time.time()) is Verdict.REPLAY:
                            await self._replay(sub)
                    n += 1
                    if n >= self._max_batch:
                        break
                    try:
                        frames = await sock.recv_multipart(flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                for sub in touched.values():
                    if sub.endpoint_id in self._subs:  # not removed while the batch was applied
                        self._wake(sub)
                if n >= self._max_batch:
                    await asyncio.sleep(0)  # let other endpoints and requests run
        except asyncio.CancelledError:
            raise
        except Exception:  # never let one publisher kill the gateway; log and stop this stream
            log.exception(failed, extra=where)

    def _route(self, frames: list[bytes], router: TopicRouter) -> _Sub | None:
        if not frames:
            return None
        topic = frames[0]
        rank = None
        if len(frames) == 3 and router.needs_rank(topic):
            rank = _dp_rank(frames[2])
        eid = router.resolve(topic, rank)
        return self._subs.get(eid) if eid is not None else None

    async def _watch(self, sub: _Sub, mon: zmq.asyncio.Socket) -> None:
        """A reconnect after a disconnect may be a restarted publisher: tell the applier."""
        disconnected = False
        try:
            while True:
                frames = await mon.recv_multipart()
                event = int.from_bytes(frames[0][:2], "little")
                if event == zmq.EVENT_DISCONNECTED:
                    disconnected = True
                elif event == zmq.EVENT_CONNECTED and disconnected:
                    disconnected = False
                    self.applier.mark_reconnected(sub.endpoint_id)
        finally:
            mon.close(linger=0)

    async def _replay(self, sub: _Sub) -> None:
        """Fetch missed messages from the publisher's replay ROUTER, then resume live."""
        eid = sub.endpoint_id
        st = self.applier.streams[eid]
        start = st.last_seq + 1
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        try:
            assert sub.replay_endpoint is not None
            dealer.connect(sub.replay_endpoint)
            await dealer.send_multipart([b"", encode_seq(start)])
            async with asyncio.timeout(self._replay_timeout_s):
                while True:
                    frames = await dealer.recv_multipart()
                    body = frames[1:] if frames and frames[0] == b"" else frames
                    if len(body) == 3:
                        seq_f, payload = body[1], body[2]
                    elif len(body) == 2:
                        seq_f, payload = body[0], body[1]
                    else:
                        self.applier.counters.malformed["replay_frame_count"] += 1
                        continue
                    seq = decode_seq(seq_f)
                    if seq == REPLAY_END_SEQ:
                        break
                    self.applier.apply_replayed(eid, seq, payload, time.time())
        except (TimeoutError, zmq.ZMQError, ValueError) as exc:
            self.applier.counters.malformed["replay_failed"] += 1
            log.warning("kv_replay_failed", extra={"endpoint": eid, "error": str(exc)})
        finally:
            dealer.close(linger=0)
            self.applier.finish_replay(eid, time.time())


class _RankOnly(msgspec.Struct, array_like=True):
    ts: msgspec.Raw
    events: msgspec.Raw
    data_parallel_rank: int | None = None


_rank_decoder = msgspec.msgpack.Decoder(_RankOnly)


def _dp_rank(payload: bytes) -> int | None:
    """The payload's ``data_parallel_rank`` without decoding its events (only for ambiguous topics)."""
    try:
        return _rank_decoder.decode(payload).data_parallel_rank
    except msgspec.DecodeError:
        return None
