"""One upstream attempt: send the request and wait for its first bytes, under per-attempt deadlines.

``open_upstream`` returns only once something can be committed to the client: the first SSE chunk of a
200 stream, or the whole body of anything else. Until then nothing has reached the client, so every
failure here (connect error, first-byte timeout, the endpoint declared unhealthy) may be retried on the
next endpoint; foreign exceptions are translated once, here, into ``UpstreamConnectFailed`` (no connection:
nothing was sent), ``UpstreamFailed`` (the connection broke) or ``UpstreamTimeout`` (connected, no first
bytes in time). Client-facing messages name no internal address; the logs carry the details.

The bytes travel over an ``UpstreamTransport`` (``gateway/transport.py``: real keep-alive pools in serving,
an in-memory double in unit tests); connecting has its own deadline (``timeouts.connect_s``) inside the
first-byte one, so a slow connect under a burst of new connections is reported as what it is. The first-byte
deadline is registered in ``watch`` while it runs, so a health checker can expire it early.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from multidict import CIMultiDict

from lanterna.errors import UpstreamFailed, UpstreamTimeout
from lanterna.gateway.transport import ConnectError, UpstreamReply, UpstreamTransport

log = logging.getLogger(__name__)

# Hop-by-hop and recomputed response headers that must not be copied back to the client.
_SKIP_RESPONSE = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding",
                            "date", "server"))


class UpstreamConnectFailed(UpstreamFailed):
    """No connection could be made (refused, unreachable, or the connect timeout passed): nothing was sent,
    so the request is safe to try on another endpoint. 502 when every endpoint failed this way."""


@dataclass(slots=True)
class Opened:
    """An upstream response whose first bytes arrived. ``streaming``: ``first`` is the first chunk and
    the rest is still to be relayed from ``response``; otherwise ``first`` is the complete body."""

    response: UpstreamReply
    status: int
    headers: CIMultiDict[str]  # the response's own: no copy per request
    first: bytes
    streaming: bool


def response_headers(upstream: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict([(k, v) for k, v in upstream.items() if k.lower() not in _SKIP_RESPONSE])


async def open_upstream(
    upstreams: UpstreamTransport, address: str, path: str, body: bytes, headers: Mapping[str, str], *,
    first_byte_s: float, watch: set[asyncio.Timeout] | None = None,
) -> Opened:
    """Send and wait for the first bytes; the caller owns ``Opened.response`` and must release it."""
    resp: UpstreamReply | None = None
    scope: asyncio.Timeout | None = None
    try:
        async with asyncio.timeout(first_byte_s) as scope:
            if watch is not None:
                watch.add(scope)
            resp = await upstreams.post(address, path, body, headers)
            is_sse = resp.status == 200 and resp.content_type == "text/event-stream"
            if is_sse:
                first = await resp.readany()
                if not first:
                    raise UpstreamFailed("the upstream replica closed the stream before the first chunk")
            else:
                first = await resp.read()
        return Opened(resp, resp.status, resp.headers, first, is_sse)
    except ConnectError as exc:  # before OSError: it is one
        log.warning("upstream_connect_failed", extra={"endpoint": address, "error": str(exc)})
        raise UpstreamConnectFailed(_connect_message(str(exc))) from exc
    except TimeoutError as exc:  # the first-byte deadline (connect has its own, shorter one), or expired early
        _close(resp)
        raise UpstreamTimeout(f"no response from the upstream replica within {first_byte_s:g}s") from exc
    except OSError as exc:
        _close(resp)
        log.warning("upstream_failed", extra={"endpoint": address, "error": str(exc)})
        raise UpstreamFailed(f"the upstream replica failed: {type(exc).__name__}") from exc
    except BaseException:
        _close(resp)
        raise
    finally:
        if watch is not None and scope is not None:
            watch.discard(scope)


def _connect_message(detail: str) -> str:
    """What the client may know: that connecting failed, and the connect timeout when that was the cause."""
    _, sep, tail = detail.partition(" within ")
    return "could not connect to an upstream replica" + (f" within {tail}" if sep else "")


def _close(resp: UpstreamReply | None) -> None:
    if resp is not None:
        resp.close()
