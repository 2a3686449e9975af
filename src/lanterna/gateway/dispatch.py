"""Dispatch one admitted request: schedule, try endpoints in order, answer or relay, account.

Retry rule: an attempt may fail over to the next endpoint only while nothing has reached the client
(``open_upstream`` has not returned first bytes). Once the response is prepared, an upstream failure
ends the stream with an OpenAI error frame instead. Load tickets are released in ``finally`` blocks,
so every exit (success, upstream death, client disconnect, cancellation) returns ``Endpoint.load`` to
where it was.
"""

from __future__ import annotations

import logging
import time

import orjson
from aiohttp import web

from lanterna.endpoints.types import Endpoint
from lanterna.errors import LanternaError, UpstreamFailed, UpstreamTimeout
from lanterna.gateway.accounting import LoadTicket
from lanterna.gateway.app import Gateway
from lanterna.gateway.proxy import (
    Opened,
    UpstreamConnectFailed,
    forward_headers,
    open_upstream,
    response_headers,
)
from lanterna.gateway.request import HDR_DESTINATION, HDR_PREFILLER, rewrite_body
from lanterna.gateway.retries import attempt_order, retryable_status
from lanterna.gateway.streaming import SSEResponse, Usage, relay_stream, usage_from_body
from lanterna.scheduler.framework.types import SchedRequest, SchedulingResult

log = logging.getLogger(__name__)

_DEFAULT_MAX_TOKENS = 16  # vLLM's default for completions; only used for load estimates
_KV_PREFILL_PARAMS = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                      "remote_block_ids": None, "remote_host": None, "remote_port": None}


def _record_failure(gw: Gateway, ep: Endpoint, reason: str) -> None:
    gw.metrics.upstream_failures_total.labels(ep.id, reason).inc()
    if gw.breakers.get(ep.id).on_failure(gw.clock.now()):
        log.warning("circuit_opened", extra={"endpoint": ep.id, "reason": reason})


def _failure_reason(err: LanternaError) -> str:
    if isinstance(err, UpstreamConnectFailed):
        return "connect"  # nothing was sent
    return "timeout" if isinstance(err, UpstreamTimeout) else "error"


async def _attempt(gw: Gateway, ep: Endpoint, path: str, body: bytes, headers: dict[str, str]) -> Opened:
    gw.breakers.get(ep.id).begin(gw.clock.now())
    assert gw.upstreams is not None
    return await open_upstream(gw.upstreams, ep.address, path, body, headers,
                               first_byte_s=gw.cfg.gateway.timeouts.first_byte_s)


async def _prefill(gw: Gateway, pf: Endpoint, path: str, kind: str, body: bytes, headers: dict[str, str],
                   prompt_tokens: int) -> tuple[bytes, dict[str, str]] | None:
    """P/D (PROTOCOLS.md section 4): prefill remotely, return the decode body carrying the returned
    ``kv_transfer_params``. None when prefill failed: the decode endpoint then prefills locally."""
    extra: dict[str, object] = {"kv_transfer_params": _KV_PREFILL_PARAMS, "stream": False, "stream_options": None,
                                "max_tokens": 1}
    if kind == "chat":
        extra["max_completion_tokens"] = 1
    with LoadTicket(pf, prompt_tokens, 1):
        try:
            opened = await _attempt(gw, pf, path, rewrite_body(body, **extra), headers)
        except LanternaError as err:
            _record_failure(gw, pf, type(err).__name__)
            log.warning("prefill_failed", extra={"endpoint": pf.id, "error": err.message})
            return None
    try:
        if opened.status != 200:
            _record_failure(gw, pf, f"http_{opened.status}")
            return None
        gw.breakers.get(pf.id).on_success()
        kv = orjson.loads(opened.first).get("kv_transfer_params")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    finally:
        opened.response.release()
    return rewrite_body(body, kv_transfer_params=kv), {**headers, HDR_PREFILLER: pf.address}


async def dispatch(gw: Gateway, request: web.Request, sreq: SchedRequest, body: bytes, stream: bool,
                   candidates: list[Endpoint], labels: tuple[str, str], started: float) -> web.StreamResponse:
    allowed = gw.breakers.allowed(candidates, gw.clock.now())
    sched = gw.scheduler  # this request's scheduler, even if a config reload swaps gw.scheduler meanwhile
    t0 = time.perf_counter()
    result: SchedulingResult = sched.schedule(sreq, allowed)  # type: ignore[attr-defined]
    gw.metrics.scheduler_e2e.observe(time.perf_counter() - t0)
    sched.pre_request(sreq, result)  # type: ignore[attr-defined]
    order = attempt_order(result.targets, allowed, gw.cfg.gateway.retries.max_attempts)
    prompt_tokens = sreq.num_prompt_tokens_estimate
    max_tokens = max(0, sreq.max_tokens if sreq.max_tokens is not None else _DEFAULT_MAX_TOKENS)
    headers = forward_headers(request.headers, sreq.request_id)
    path = request.path
    pf = result.prefill()
    last_err: LanternaError | None = None
    for i, ep in enumerate(order):
        if i:
            gw.metrics.retries_total.inc()
        ticket = LoadTicket(ep, prompt_tokens, max_tokens)
        try:
            send_body, send_headers = body, headers
            if pf is not None and pf.id != ep.id:
                pd = await _prefill(gw, pf, path, sreq.kind, body, headers, prompt_tokens)
                if pd is not None:
                    send_body, send_headers = pd
            opened = await _attempt(gw, ep, path, send_body, send_headers)
        except LanternaError as err:
            ticket.release()
            _record_failure(gw, ep, _failure_reason(err))
            log.warning("upstream_attempt_failed", extra={"endpoint": ep.id, "attempt": i + 1, "error": err.message})
            last_err = err
            continue
        except BaseException:
            ticket.release()
            raise
        if retryable_status(opened.status) and i + 1 < len(order):
            opened.response.release()
            ticket.release()
            _record_failure(gw, ep, f"http_{opened.status}")
            last_err = UpstreamFailed(f"endpoint {ep.id} answered {opened.status}")
            continue
        return await _respond(gw, sched, request, sreq, result, ep, opened, ticket, labels, started)
    raise last_err or UpstreamFailed("no endpoint could be tried")


async def _respond(gw: Gateway, sched: object, request: web.Request, sreq: SchedRequest, result: SchedulingResult, ep: Endpoint,
                   opened: Opened, ticket: LoadTicket, labels: tuple[str, str], started: float) -> web.StreamResponse:
    """Answer from an opened upstream; owns ``ticket`` and ``opened.response`` from here on."""
    m = gw.metrics
    usage: Usage | None = None
    frames = 0
    clean = False
    status = opened.status
    try:
        hdrs = response_headers(opened.headers)
        hdrs["x-request-id"] = sreq.request_id
        hdrs[HDR_DESTINATION] = ep.id
        if not opened.streaming:
            ticket.first_token()
            if status < 500:
                gw.breakers.get(ep.id).on_success()
            else:
                _record_failure(gw, ep, f"http_{status}")
            usage = usage_from_body(opened.first) if status == 200 else None
            clean = True
            return web.Response(status=status, body=opened.first, headers=hdrs)
        out = SSEResponse(status=status, headers=hdrs)
        await out.prepare(request)
        outcome = await relay_stream(opened.response, opened.first, out, ticket)
        usage, frames = outcome.usage, outcome.num_frames
        if outcome.upstream_error is not None:
            status = outcome.upstream_error.status
            _record_failure(gw, ep, "mid_stream")
            log.warning("upstream_died_mid_stream", extra={"endpoint": ep.id, "error": outcome.upstream_error.message})
        else:
            gw.breakers.get(ep.id).on_success()
            clean = not outcome.client_gone
        if not outcome.client_gone:
            try:
                await out.write_eof()
            except (ConnectionResetError, OSError):
                pass
        return out
    finally:
        ticket.release()
        if clean:
            opened.response.release()
        else:
            opened.response.close()  # drops the upstream connection: vLLM aborts the request
        cached = usage.cached_tokens if usage is not None else None
        sched.response_complete(sreq, result, ep.id, cached)  # type: ignore[attr-defined]
        if status >= 400:
            m.request_error_total.labels(*labels, str(status)).inc()
        obj = m.objective(*labels)
        obj.request_duration.observe(time.perf_counter() - started)
        if usage is not None:
            obj.input_tokens.observe(usage.prompt_tokens)
            obj.output_tokens.observe(usage.completion_tokens)
        elif frames:
            obj.output_tokens.observe(max(0, frames - 1))
