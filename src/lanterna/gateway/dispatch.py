"""The HTTP face of one admitted request: schedule, try endpoints in order, answer or relay.

The decisions are the routing core's (``lanterna.routing.core``: the plan, attempt deadlines, breaker verdicts,
the 5xx rule); this module moves bytes. An attempt may fail over to the next endpoint only while nothing has
reached the client (``open_upstream`` has not returned first bytes); once the response is prepared, an upstream
failure ends the stream with an OpenAI error frame instead. Every attempt ends in exactly one breaker verdict
or ``attempt_abandoned`` (cancellation, client disconnect), and load tickets are released in ``finally``
blocks, so every exit returns ``Endpoint.load`` and the half-open probe slot to where they were.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from aiohttp import web

from lanterna.endpoints.types import Endpoint
from lanterna.errors import LanternaError, UpstreamFailed, UpstreamTimeout
from lanterna.gateway.proxy import (
    Opened,
    UpstreamConnectFailed,
    forward_headers,
    open_upstream,
    response_headers,
)
from lanterna.gateway.state import Gateway
from lanterna.gateway.streaming import SSEResponse, error_frame, relay_stream, usage_from_body
from lanterna.routing import core
from lanterna.routing.accounting import LoadTicket
from lanterna.routing.call import InferenceCall
from lanterna.routing.fields import HDR_DESTINATION, HDR_PREFILLER, rewrite_body

log = logging.getLogger(__name__)

_KV_PREFILL_PARAMS = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                      "remote_block_ids": None, "remote_host": None, "remote_port": None}


class EndpointWentUnhealthy(UpstreamFailed):
    """The health checker declared the endpoint down while this attempt waited for first bytes."""


def _failure_reason(err: LanternaError) -> str:
    if isinstance(err, UpstreamConnectFailed):
        return "connect"  # nothing was sent
    if isinstance(err, EndpointWentUnhealthy):
        return "unhealthy"
    return "timeout" if isinstance(err, UpstreamTimeout) else "error"


async def _send(gw: Gateway, call: InferenceCall, ep: Endpoint, path: str, body: bytes, headers: dict[str, str],
                wait_s: float) -> Opened:
    """One attempt, in an ``upstream`` span (send to first bytes) whose context the upstream receives."""
    assert gw.upstreams is not None
    watch = gw.waiting_attempts.get(ep.id)
    if watch is None:
        watch = gw.waiting_attempts[ep.id] = set()
    trace = call.trace
    with trace.span("upstream") as span:
        trace.inject(headers)
        try:
            opened = await open_upstream(gw.upstreams, ep.address, path, body, headers, first_byte_s=wait_s,
                                         watch=watch)
        except UpstreamTimeout:
            if not ep.healthy:
                raise EndpointWentUnhealthy("the upstream replica became unavailable") from None
            raise
        if trace.recording:
            span.set("server.address", ep.address)
            span.set("http.response.status_code", opened.status)
        return opened


async def _prefill(gw: Gateway, call: InferenceCall, pf: Endpoint, path: str, headers: dict[str, str]
                   ) -> tuple[bytes, dict[str, str]] | None:
    """P/D (PROTOCOLS.md section 4): prefill remotely, return the decode body carrying the returned
    ``kv_transfer_params``. None when prefill failed: the decode endpoint then prefills locally."""
    extra: dict[str, object] = {"kv_transfer_params": _KV_PREFILL_PARAMS, "stream": False, "stream_options": None,
                                "max_tokens": 1}
    if call.kind == "chat":
        extra["max_completion_tokens"] = 1
    wait_s = core.attempt_timeout(gw, call, pf)
    breaker = gw.breakers.get(pf.id)
    breaker.begin(gw.clock.now())
    with LoadTicket(pf, call.sreq.num_prompt_tokens_estimate, 1, call.sreq.lora):
        try:
            opened = await _send(gw, call, pf, path, rewrite_body(call.body, **extra), headers, wait_s)
        except LanternaError as err:
            core.attempt_failed(gw, call, pf, _failure_reason(err))
            log.warning("prefill_failed", extra={"endpoint": pf.id, "error": err.message})
            return None
        except BaseException:
            core.attempt_abandoned(gw, pf)
            raise
    try:
        if opened.status >= 500:
            core.attempt_failed(gw, call, pf, f"http_{opened.status}")
            return None
        if opened.status != 200:
            breaker.on_success()  # alive; it refused this request
            return None
        breaker.on_success()
        kv = msgspec.json.decode(opened.first).get("kv_transfer_params")
    except (msgspec.DecodeError, AttributeError):
        return None
    finally:
        opened.response.release()
    return rewrite_body(call.body, kv_transfer_params=kv), {**headers, HDR_PREFILLER: pf.address}


def _past_deadline(gw: Gateway, call: InferenceCall) -> bool:
    return call.deadline is not None and gw.clock.now() >= call.deadline - 0.001


async def dispatch(gw: Gateway, request: web.Request, call: InferenceCall) -> web.StreamResponse:
    order = core.schedule(gw, call)
    auth = gw.auth
    headers = forward_headers(request.headers, call.request_id,
                              upstream_api_key=auth.upstream_api_key if auth is not None else None,
                              allow_model_rewrite=gw.cfg.auth.forward_model_rewrite_header)
    path = request.path
    pf = call.prefill
    last_err: LanternaError | None = None
    n = len(order)
    for i, ep in enumerate(order):
        send_body, send_headers = call.body, headers
        if pf is not None and pf.id != ep.id:
            pd = await _prefill(gw, call, pf, path, headers)
            if pd is not None:
                send_body, send_headers = pd
        wait_s = core.attempt_timeout(gw, call, ep)  # UpstreamTimeout once the request's deadline passed
        ticket = core.begin_attempt(gw, call, ep)
        try:
            opened = await _send(gw, call, ep, path, send_body, send_headers, wait_s)
        except LanternaError as err:
            ticket.release()
            if _past_deadline(gw, call):
                core.attempt_abandoned(gw, ep)  # the client's deadline, not the endpoint's fault
                raise UpstreamTimeout("the request's deadline passed before an upstream replica answered") from None
            core.attempt_failed(gw, call, ep, _failure_reason(err))
            log.warning("upstream_attempt_failed", extra={"endpoint": ep.id, "attempt": i + 1, "error": err.message})
            last_err = err
            continue
        except BaseException:  # cancelled: the client left, or the server is stopping
            ticket.release()
            core.attempt_abandoned(gw, ep)
            raise
        if core.answered(gw, call, ep, opened.status, last=i + 1 == n) is core.RETRY:
            opened.response.release()
            ticket.release()
            log.warning("upstream_attempt_failed", extra={"endpoint": ep.id, "attempt": i + 1,
                                                          "status": opened.status})
            last_err = UpstreamFailed(f"the upstream replica answered {opened.status}")
            continue
        return await _respond(gw, request, call, ep, opened, ticket)
    raise last_err or UpstreamFailed("no upstream replica could be tried")


async def _respond(gw: Gateway, request: web.Request, call: InferenceCall, ep: Endpoint, opened: Opened,
                   ticket: LoadTicket) -> web.StreamResponse:
    """Answer from an opened upstream; owns ``ticket`` and ``opened.response`` from here on."""
    core.served(gw, call, ep, opened.status)
    call.ttft_s = gw.clock.now() - call.started
    clean = False
    try:
        hdrs = response_headers(opened.headers)
        hdrs["x-request-id"] = call.request_id
        hdrs[HDR_DESTINATION] = ep.id
        if not opened.streaming:
            ticket.first_token()
            call.response_bytes = len(opened.first)
            usage = usage_from_body(opened.first) if opened.status == 200 else None
            if usage is not None:
                call.prompt_tokens, call.output_tokens = usage.prompt_tokens, usage.completion_tokens
                call.cached_tokens = usage.cached_tokens
            clean = True
            return web.Response(status=opened.status, body=opened.first, headers=hdrs)
        out = SSEResponse(status=opened.status, headers=hdrs)
        await out.prepare(request)
        try:
            if call.deadline is None:
                outcome = await relay_stream(opened.response, opened.first, out, ticket)
            else:
                async with asyncio.timeout(max(0.0, call.deadline - gw.clock.now())):
                    outcome = await relay_stream(opened.response, opened.first, out, ticket)
        except TimeoutError:  # the request's deadline passed mid-stream
            call.status, call.error = UpstreamTimeout.status, UpstreamTimeout.error_type
            try:
                await out.write_eof(error_frame(UpstreamTimeout("the request's deadline passed")))
            except (ConnectionResetError, OSError):
                pass
            return out
        call.response_bytes = outcome.num_bytes
        usage = outcome.usage
        if usage is not None:
            call.prompt_tokens, call.output_tokens = usage.prompt_tokens, usage.completion_tokens
            call.cached_tokens = usage.cached_tokens
        elif outcome.num_frames:
            call.output_tokens = max(0, outcome.num_frames - 1)
        if outcome.upstream_error is not None:
            call.status, call.error = outcome.upstream_error.status, outcome.upstream_error.error_type
            core.attempt_failed(gw, call, ep, "mid_stream")
            log.warning("upstream_died_mid_stream", extra={"endpoint": ep.id, "error": outcome.upstream_error.message})
        elif outcome.client_gone:
            call.error = core.CLIENT_GONE
        else:
            clean = True
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
