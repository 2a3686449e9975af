"""One upstream attempt: send the request and wait for its first bytes, under per-endpoint deadlines.

``open_upstream`` returns only once something can be committed to the client: the first SSE chunk of a
200 stream, or the whole body of anything else. Until then nothing has reached the client, so every
failure here (connect error, first-byte timeout, 5xx) is retryable on the next endpoint; foreign
exceptions are translated once, here, into ``UpstreamFailed`` / ``UpstreamTimeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from lanterna.errors import UpstreamFailed, UpstreamTimeout

# Hop-by-hop and recomputed headers that must not be copied between client and upstream.
_SKIP_REQUEST = frozenset(("host", "content-length", "transfer-encoding", "connection", "keep-alive",
                           "accept-encoding", "expect", "upgrade", "te", "trailer", "proxy-connection",
                           "x-request-id", "content-type"))
_SKIP_RESPONSE = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding",
                            "date", "server"))


@dataclass(slots=True)
class Opened:
    """An upstream response whose first bytes arrived. ``streaming``: ``first`` is the first chunk and
    the rest is still to be relayed from ``response``; otherwise ``first`` is the complete body."""

    response: aiohttp.ClientResponse
    status: int
    headers: CIMultiDict[str]
    first: bytes
    streaming: bool


def forward_headers(incoming: Mapping[str, str], request_id: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    out = {k: v for k, v in incoming.items() if k.lower() not in _SKIP_REQUEST}
    out["x-request-id"] = request_id
    out["content-type"] = "application/json"
    if extra:
        out.update(extra)
    return out


def response_headers(upstream: CIMultiDict[str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in upstream.items() if k.lower() not in _SKIP_RESPONSE)


async def open_upstream(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    client_timeout: aiohttp.ClientTimeout,
    first_byte_s: float,
) -> Opened:
    """Send and wait for the first bytes; the caller owns ``Opened.response`` and must release it."""
    resp: aiohttp.ClientResponse | None = None
    try:
        async with asyncio.timeout(first_byte_s):
            resp = await session.post(url, data=body, headers=headers, timeout=client_timeout)
            is_sse = resp.status == 200 and resp.content_type == "text/event-stream"
            if is_sse:
                first = await resp.content.readany()
                if not first:
                    raise UpstreamFailed("upstream closed the stream before the first chunk")
            else:
                first = await resp.read()
        return Opened(resp, resp.status, resp.headers.copy(), first, is_sse)  # type: ignore[arg-type]
    except TimeoutError as exc:  # asyncio.timeout and aiohttp's socket timeouts alike
        _close(resp)
        raise UpstreamTimeout(f"no response from {url} within {first_byte_s:g}s") from exc
    except (aiohttp.ClientError, OSError) as exc:
        _close(resp)
        raise UpstreamFailed(f"upstream {url} failed: {type(exc).__name__}") from exc
    except BaseException:
        _close(resp)
        raise


def _close(resp: aiohttp.ClientResponse | None) -> None:
    if resp is not None:
        resp.close()
