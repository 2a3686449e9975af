"""One benchmark request against an OpenAI-compatible server, timed token by token.

Every outcome ends in the record: a non-200 answer is ``http_<status>``; a refused connection
``connect_error``; a dropped connection ``disconnect``; a stream that ends without ``[DONE]``
``incomplete_stream``; an error frame inside the stream ``stream_error``; the deadline ``timeout``.
Nothing raises out of ``send`` except cancellation, so a failing endpoint never stops a run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

from lanterna.bench.config import HttpTarget
from lanterna.bench.metrics import RequestRecord
from lanterna.bench.text import TextRenderer
from lanterna.bench.workloads import WorkItem

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def build_body(target: HttpTarget, item: WorkItem, renderer: TextRenderer) -> bytes:
    body: dict[str, Any] = {"model": target.model, "max_tokens": item.output_len, "stream": target.stream}
    if target.ignore_eos:
        body["ignore_eos"] = True
        body["min_tokens"] = item.output_len
    if target.stream:
        body["stream_options"] = {"include_usage": True}
    if target.api == "chat":
        body["messages"] = renderer.messages(item)
    else:
        body["prompt"] = renderer.prompt(item)
    return _encode(body)


def url_for(target: HttpTarget) -> str:
    path = "/v1/chat/completions" if target.api == "chat" else "/v1/completions"
    return target.url.rstrip("/") + path


def _usage(rec: RequestRecord, usage: dict[str, Any]) -> None:
    rec.prompt_tokens = int(usage.get("prompt_tokens") or rec.prompt_tokens)
    details = usage.get("prompt_tokens_details") or {}
    if details.get("cached_tokens") is not None:
        rec.cached_tokens = int(details["cached_tokens"])
    n = usage.get("completion_tokens")
    if n is not None and int(n) > rec.output_tokens:
        rec.output_tokens = int(n)  # a chunk may have carried several tokens


def _has_token(choice: dict[str, Any]) -> bool:
    if choice.get("text"):
        return True
    delta = choice.get("delta")
    return bool(delta and (delta.get("content") or delta.get("reasoning_content")))


async def _read_stream(resp: aiohttp.ClientResponse, rec: RequestRecord, now: Callable[[], float]) -> None:
    done = False
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True  # keep reading to the end so the connection goes back to the pool
            continue
        obj = _decode(data)
        if "error" in obj:
            rec.error = "stream_error"
            continue
        t = now()
        n = sum(1 for c in obj.get("choices") or () if _has_token(c))
        if n:
            rec.on_tokens(t, n)
        if obj.get("usage"):
            _usage(rec, obj["usage"])
    if not done and rec.error is None:
        rec.error = "incomplete_stream"


async def send(
    session: aiohttp.ClientSession,
    target: HttpTarget,
    body: bytes,
    rec: RequestRecord,
    now: Callable[[], float],
    headers: dict[str, str],
) -> None:
    """POST and fill ``rec``; ``rec.send_s`` must already be set."""
    try:
        async with asyncio.timeout(target.timeout_s):
            async with session.post(url_for(target), data=body, headers=headers) as resp:
                if resp.status != 200:
                    await resp.read()
                    rec.error = f"http_{resp.status}"
                    return
                if target.stream:
                    await _read_stream(resp, rec, now)
                else:
                    obj = _decode(await resp.read())
                    t = now()
                    rec.on_tokens(t, 1)
                    _usage(rec, obj.get("usage") or {})
                rec.end_s = now()
    except TimeoutError:
        rec.error = "timeout"
    except aiohttp.ClientConnectorError:
        rec.error = "connect_error"
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, ConnectionResetError):
        rec.error = "disconnect"
    except aiohttp.ClientError:
        rec.error = "client_error"
    except msgspec.DecodeError:
        rec.error = "bad_response"
