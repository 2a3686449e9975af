"""SSE relay: copy upstream bytes to the client as they arrive, never re-encoding chunks.

Only two things are read from the stream, both cheaply: the first chunk (first token: releases the
prefill share of the load) and the trailing ``usage`` object (token metrics), which vLLM sends in the
last chunk before ``[DONE]``; we keep a bounded tail of the stream and parse it once at the end.

Writes are syscalls (on loopback each one also runs the peer's TCP receive path), so the relay makes as
few as the stream allows: the response headers go out with the first chunk (``SSEResponse``), and the
chunk that ends the upstream stream goes out together with the chunked-encoding terminator. A short
stream whose bytes are all buffered by the time its first chunk is read costs the client one write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import msgspec
from aiohttp import web

from lanterna.errors import LanternaError, UpstreamFailed, UpstreamTimeout
from lanterna.gateway.transport import UpstreamReply
from lanterna.routing.accounting import LoadTicket

_TAIL_KEEP = 8192
_DONE = b"data: [DONE]\n\n"


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None


class _WithUsage(msgspec.Struct):
    usage: _Usage | None = None


_decode_usage = msgspec.json.Decoder(_WithUsage).decode
_encode = msgspec.json.encode


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None


def usage_from_body(body: bytes) -> Usage | None:
    """``usage`` of a non-streaming response (None when absent or unparsable)."""
    try:
        u = _decode_usage(body).usage
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if u is None:
        return None
    return Usage(u.prompt_tokens, u.completion_tokens, u.prompt_tokens_details.cached_tokens
                 if u.prompt_tokens_details else None)


def usage_from_tail(tail: bytes) -> Usage | None:
    """The last ``data:`` frame carrying ``"usage"`` in the stream's tail."""
    at = tail.rfind(b'"usage"')
    if at < 0:
        return None
    start = tail.rfind(b"data: ", 0, at)
    end = tail.find(b"\n", at)
    if start < 0:
        return None
    return usage_from_body(tail[start + 6 : end if end >= 0 else len(tail)])


def error_frame(err: LanternaError) -> bytes:
    """The OpenAI/vLLM mid-stream error shape: one ``data:`` error frame, then ``[DONE]``."""
    return b"data: " + _encode(err.body()) + b"\n\n" + _DONE


class SSEResponse(web.StreamResponse):
    """A chunked response whose headers are sent with the first body write, not by ``prepare()``."""

    _send_headers_immediately = False


@dataclass(slots=True)
class RelayOutcome:
    usage: Usage | None = None
    num_frames: int = 0
    num_bytes: int = 0  # body bytes written to the client (the upstream's; an error frame not included)
    client_gone: bool = False
    upstream_error: LanternaError | None = None


class _Writer(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def write_eof(self, data: bytes = b"") -> None: ...


async def _send(out: _Writer, data: bytes, last: bool) -> bool:
    """Write ``data`` (with the end of the response when ``last``); False when the client is gone."""
    try:
        if last:
            await out.write_eof(data)
        else:
            await out.write(data)
    except (ConnectionResetError, OSError):
        return False
    return True


async def relay_stream(
    upstream: UpstreamReply, first: bytes, out: _Writer, ticket: LoadTicket,
) -> RelayOutcome:
    """Write ``first`` (already read, so retries were possible until now) then the rest of the stream.

    ``readany`` returns everything buffered, and ``at_eof`` tells whether that was the end, so the last
    piece goes out with the response terminator. An upstream that dies or goes silent mid-stream ends the
    client's stream with an error frame; a client that leaves ends the relay (the caller then closes the
    upstream connection, so vLLM aborts).
    """
    res = RelayOutcome()
    content = upstream.content
    tail = bytearray(first)
    frames = first.count(b"data: ")
    ticket.first_token()
    if not await _send(out, first, content.at_eof()):
        res.client_gone = True
        return res
    sent = len(first)
    try:
        while not content.at_eof():
            chunk = await content.readany()
            if not chunk:
                break
            sent += len(chunk)
            frames += chunk.count(b"data: ")
            tail += chunk
            if len(tail) > 2 * _TAIL_KEEP:
                del tail[:-_TAIL_KEEP]
            if not await _send(out, chunk, content.at_eof()):
                res.client_gone = True
                res.num_bytes, res.num_frames = sent, frames
                return res
    except TimeoutError:  # nothing within timeouts.stream_idle_s
        res.upstream_error = UpstreamTimeout("upstream stalled mid-stream")
    except OSError as exc:  # connection reset or closed mid-body
        res.upstream_error = UpstreamFailed(f"upstream connection lost mid-stream: {type(exc).__name__}")
    if res.upstream_error is not None and not await _send(out, error_frame(res.upstream_error), False):
        res.client_gone = True
    res.num_frames = frames
    res.num_bytes = sent
    res.usage = usage_from_tail(bytes(tail))
    return res
