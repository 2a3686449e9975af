"""``UpstreamTransport``: the port the proxy sends requests through.

``gateway.upstream.Upstreams`` (keep-alive pools over real sockets) implements it for serving;
``gateway.memory_transport.MemoryTransport`` (scripted replies, no sockets) implements it for socket-free tests
and benchmarks of dispatch, retries, streaming and failover. The reply reads like aiohttp's: ``content.readany()``
until it returns b"", ``at_eof()``, then ``release()`` (reusable connection) or ``close()`` (abort).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from multidict import CIMultiDict


class ConnectError(OSError):
    """No connection to the upstream (refused, unreachable, or the connect timeout passed): nothing was sent."""


class UpstreamBody(Protocol):
    def at_eof(self) -> bool: ...

    async def readany(self) -> bytes:
        """Buffered body bytes, waiting for some when none are; b"" at the end. ``TimeoutError`` after the
        transport's idle limit, ``OSError`` when the connection broke."""
        ...


class UpstreamReply(UpstreamBody, Protocol):
    status: int
    headers: CIMultiDict[str]
    content_type: str  # lower-cased media type without parameters

    @property
    def content(self) -> UpstreamBody: ...

    async def read(self) -> bytes: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


class UpstreamTransport(Protocol):
    async def post(self, address: str, path: str, body: bytes, headers: Mapping[str, str]) -> UpstreamReply:
        """Send and wait for the response head. ``ConnectError`` (an ``OSError``) when nothing could be sent."""
        ...

    async def prewarm(self, address: str, n: int) -> None: ...

    def forget(self, address: str) -> None: ...

    def close(self) -> None: ...
