"""What the inference path needs of an HTTP server: a request it can read and a reply it can write.

Two servers implement these: the lean front (``gateway/lean.py``, the default) and aiohttp (``gateway.server:
aiohttp``, and every non-inference route). ``routes.serve_inference`` and ``dispatch`` see only these Protocols,
so both servers run one implementation of the request path and cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from aiohttp import web

from lanterna.gateway.streaming import SSEResponse


class ClientRequest(Protocol):
    """The parts of a client request the inference path reads (aiohttp's ``web.Request`` has them too)."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def remote(self) -> str | None: ...


class Reply(Protocol):
    """One response to the client: either ``send`` (whole), or ``start`` then ``write``s and one ``write_eof``.

    ``start`` sends nothing: the head goes out with the first body bytes (a short stream costs one write).
    ``write``/``write_eof`` raise ``ConnectionResetError``/``OSError`` once the client is gone."""

    async def send(self, status: int, headers: Mapping[str, str], body: bytes) -> None: ...

    async def start(self, status: int, headers: Mapping[str, str]) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def write_eof(self, data: bytes = b"") -> None: ...


class AiohttpReply:
    """``Reply`` over aiohttp: the handler returns ``response`` (a ``web.Response`` or the prepared stream)."""

    __slots__ = ("_request", "response")

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.response: web.StreamResponse | None = None

    async def send(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.response = web.Response(status=status, body=body, headers=headers)

    async def start(self, status: int, headers: Mapping[str, str]) -> None:
        out = SSEResponse(status=status, headers=headers)
        await out.prepare(self._request)
        self.response = out

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        await self.response.write(data)

    async def write_eof(self, data: bytes = b"") -> None:
        assert self.response is not None
        await self.response.write_eof(data)
