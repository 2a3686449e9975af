"""An in-memory ``UpstreamTransport``: scripted replies per address, no sockets.

Each address gets a queue of ``Scripted`` replies (the last one repeats) or a handler that builds one per
request. A reply may refuse the connection, hold its head or any body chunk behind an ``asyncio.Event`` (a
stall the test releases, or never), or break the connection after some chunks (mid-stream death). What each
request carried and how each reply ended (released, closed) is recorded for assertions.

    t = MemoryTransport(idle_s=5)
    t.script("a:1", Scripted(status=500, body=b'{"error": {}}'))
    t.script("b:1", Scripted.sse([b'data: {"x": 1}\\n\\n', b"data: [DONE]\\n\\n"]))
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from multidict import CIMultiDict

from lanterna.gateway.transport import ConnectError


@dataclass(slots=True)
class Scripted:
    """One scripted reply. ``chunks`` are body pieces; an ``asyncio.Event`` among them is a gate the body waits
    on; ``die_after`` breaks the connection after that many chunks (mid-stream death)."""

    status: int = 200
    content_type: str = "application/json"
    chunks: Sequence[bytes | asyncio.Event] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    refuse: bool = False  # connect error: nothing was sent
    head_gate: asyncio.Event | None = None  # the response head waits for it (a stall before any byte)
    die_after: int | None = None
    arrived: asyncio.Event | None = None  # set when a request reaches this reply (tests await it, no polling)
    cancelled: asyncio.Event | None = None  # set when the gateway gave up waiting for the head (client left)

    @classmethod
    def json(cls, body: bytes, status: int = 200, head_gate: asyncio.Event | None = None,
             arrived: asyncio.Event | None = None, cancelled: asyncio.Event | None = None) -> Scripted:
        return cls(status=status, chunks=(body,), head_gate=head_gate, arrived=arrived, cancelled=cancelled)

    @classmethod
    def sse(cls, frames: Sequence[bytes | asyncio.Event], die_after: int | None = None,
            head_gate: asyncio.Event | None = None, arrived: asyncio.Event | None = None) -> Scripted:
        return cls(status=200, content_type="text/event-stream", chunks=tuple(frames), die_after=die_after,
                   head_gate=head_gate, arrived=arrived)


@dataclass(slots=True)
class Sent:
    """One request the transport received."""

    address: str
    path: str
    body: bytes
    headers: dict[str, str]
    reply: MemoryReply | None = None


class MemoryReply:
    """The reply to one request; implements ``transport.UpstreamReply``."""

    __slots__ = ("status", "headers", "content_type", "_chunks", "_at", "_idle_s", "_die_after", "released",
                 "closed")

    def __init__(self, s: Scripted, idle_s: float) -> None:
        self.status = s.status
        self.headers: CIMultiDict[str] = CIMultiDict({"content-type": s.content_type, **s.headers})
        self.content_type = s.content_type
        self._chunks = list(s.chunks)
        self._at = 0
        self._idle_s = idle_s
        self._die_after = s.die_after
        self.released = False
        self.closed = False

    @property
    def content(self) -> MemoryReply:
        return self

    def at_eof(self) -> bool:
        return self._at >= len(self._chunks) and self._die_after is None

    async def readany(self) -> bytes:
        while True:
            if self._die_after is not None and self._at >= min(self._die_after, len(self._chunks)):
                raise ConnectionResetError("scripted: upstream connection lost")
            if self._at >= len(self._chunks):
                return b""
            item = self._chunks[self._at]
            self._at += 1
            if isinstance(item, asyncio.Event):
                async with asyncio.timeout(self._idle_s):
                    await item.wait()
                continue
            return item

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


Handler = Callable[[str, bytes, Mapping[str, str]], Scripted]


class MemoryTransport:
    """Implements ``transport.UpstreamTransport`` from scripts; unscripted addresses refuse connections."""

    def __init__(self, idle_s: float = 30.0) -> None:
        self.idle_s = idle_s
        self.sent: list[Sent] = []
        self._scripts: dict[str, list[Scripted]] = {}
        self._handlers: dict[str, Handler] = {}
        self.closed = False

    def script(self, address: str, *replies: Scripted) -> None:
        """Replies in order; the last one repeats."""
        self._scripts[address] = list(replies)

    def handle(self, address: str, handler: Handler) -> None:
        """Build each reply from the request (path, body, headers)."""
        self._handlers[address] = handler

    def hits(self, address: str) -> int:
        return sum(1 for s in self.sent if s.address == address)

    def _next(self, address: str, path: str, body: bytes, headers: Mapping[str, str]) -> Scripted | None:
        h = self._handlers.get(address)
        if h is not None:
            return h(path, body, headers)
        q = self._scripts.get(address)
        if not q:
            return None
        return q.pop(0) if len(q) > 1 else q[0]

    async def post(self, address: str, path: str, body: bytes, headers: Mapping[str, str]) -> MemoryReply:
        s = self._next(address, path, body, headers)
        if s is None or s.refuse:
            raise ConnectError(f"could not connect to {address}: scripted refusal")
        sent = Sent(address, path, body, dict(headers))
        self.sent.append(sent)
        if s.arrived is not None:
            s.arrived.set()
        if s.head_gate is not None:
            try:
                await s.head_gate.wait()
            except asyncio.CancelledError:
                if s.cancelled is not None:
                    s.cancelled.set()  # waiters resume after the cancelled task's handlers ran
                raise
        sent.reply = MemoryReply(s, self.idle_s)
        return sent.reply

    async def prewarm(self, address: str, n: int) -> None:
        return None

    def forget(self, address: str) -> None:
        self._scripts.pop(address, None)
        self._handlers.pop(address, None)

    def close(self) -> None:
        self.closed = True
