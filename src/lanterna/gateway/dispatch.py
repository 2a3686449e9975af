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

from lanterna.endpoints.types import Endpoint
from lanterna.errors import LanternaError, UpstreamFailed, UpstreamTimeout
from lanterna.gateway.face import ClientRequest, Reply
from lanterna.gateway.header_policy import upstream_headers
from lanterna.gateway.proxy import (
    Opened,
    UpstreamConnectFailed,
    open_upstream,
    response_headers,
)
from lanterna.gateway.state import Gateway
from lanterna.gateway.streaming import error_frame, relay_stream, usage_from_body
from lanterna.routing import core, pd
from lanterna.routing.accounting import LoadTicket
from lanterna.routing.call import InferenceCall
from lanterna.routing.fields import HDR_DESTINATION, HDR_PREFILLER, rewrite_body

log = logging.getLogger(__name__)


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
    trace = call.trace
    if not trace.recording:  # the common case: no span; a client's valid traceparent still goes upstream
        if trace.traceparent:
            trace.inject(headers)
        return await _open(gw, ep, path, body, headers, wait_s)
    with trace.span("upstream") as span:
        trace.inject(headers)
        opened = await _open(gw, ep, path, body, headers, wait_s)
        span.set("server.address", ep.address)
        span.set("http.response.status_code", opened.status)
        return opened


async def _open(gw: Gateway, ep: Endpoint, path: str, body: bytes, headers: dict[str, str],
                wait_s: float) -> Opened:
    assert gw.upstreams is not None
    watch = gw.waiting_attempts.get(ep.id)
    if watch is None:
        watch = gw.waiting_attempts[ep.id] = set()
    try:
        return await open_upstream(gw.upstreams, ep.address, path, body, headers, first_byte_s=wait_s, watch=watch)
    except UpstreamTimeout:
        if not ep.healthy:
            raise EndpointWentUnhealthy("the upstream replica became unavailable") from None
        raise


async def _prefill(gw: Gateway, call: InferenceCall, pf: Endpoint, path: str, headers: dict[str, str]
                   ) -> bytes | None:
    """P/D placement ``gateway`` (PROTOCOLS.md section 4): prefill remotely, return the decode body carrying the
    returned ``kv_transfer_params`` verbatim. None when the prefill failed: the decode endpoint then prefills
    locally (aggregated serving), counted in ``lanterna_gateway_pd_prefill_fallbacks_total``."""
    wait_s = core.attempt_timeout(gw, call, pf)
    breaker = gw.breakers.get(pf.id)
    breaker.begin(gw.clock.now())
    fallbacks = gw.metrics.pd_fallbacks
    with LoadTicket(pf, call.sreq.num_prompt_tokens_estimate, 1, call.sreq.lora):
        try:
            opened = await _send(gw, call, pf, path, rewrite_body(call.body, **pd.prefill_fields(call.kind == "chat")),
                                 headers, wait_s)
        except LanternaError as err:
            reason = _failure_reason(err)
            core.attempt_failed(gw, call, pf, reason)
            fallbacks.labels(reason).inc()
            log.warning("prefill_failed", extra={"endpoint": pf.id, "error": err.message})
            return None
        except BaseException:
            core.attempt_abandoned(gw, pf)
            raise
    try:
        if opened.status >= 500:
            core.attempt_failed(gw, call, pf, f"http_{opened.status}")
            fallbacks.labels("http_5xx").inc()
            return None
        breaker.on_success()  # alive (a 4xx: it refused this request)
        if opened.status != 200:
            fallbacks.labels("http_4xx").inc()
            return None
        kv = pd.kv_params_of(opened.first)
    finally:
        opened.response.release()
    if kv is None:
        fallbacks.labels("no_kv_params").inc()
        return None
    return rewrite_body(call.body, kv_transfer_params=kv)


def _past_deadline(gw: Gateway, call: InferenceCall) -> bool:
    return call.deadline is not None and gw.clock.now() >= call.deadline - 0.001


async def dispatch(gw: Gateway, request: ClientRequest, call: InferenceCall, reply: Reply) -> None:
    order = core.schedule(gw, call)
    auth = gw.auth
    headers = upstream_headers(request.headers, call.sreq.request_id,
                               upstream_api_key=auth.upstream_api_key if auth is not None else None,
                               allow_model_rewrite=gw.cfg.auth.forward_model_rewrite_header)
    path = request.path
    pf = call.prefill
    last_err: LanternaError | None = None
    n = len(order)
    sidecar_mode = gw.cfg.gateway.pd.placement == "sidecar"
    decode_body: bytes | None = None  # placement gateway: the prefill leg runs once, whatever the decode retries
    prefilled = False
    for i, ep in enumerate(order):
        if i and not ep.healthy:
            continue  # declared down since the request was scheduled: not worth another first-byte wait
        send_body, send_headers = call.body, headers
        if pf is not None and pf.id != ep.id:
            if sidecar_mode:  # the decode pod's sidecar runs the prefill leg
                send_headers = {**headers, HDR_PREFILLER: pf.address}
            else:  # NOTE: no x-prefiller-host-port here, or a decode sidecar would prefill a second time
                if not prefilled:
                    decode_body, prefilled = await _prefill(gw, call, pf, path, headers), True
                if decode_body is not None:
                    send_body = decode_body
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
        await _respond(gw, call, ep, opened, ticket, reply)
        return
    if not any(e.healthy for e in order):  # every replica tried went down meanwhile: 503, retry later
        raise core.no_ready_endpoint(call.target)
    raise last_err or UpstreamFailed("no upstream replica could be tried")


async def _respond(gw: Gateway, call: InferenceCall, ep: Endpoint, opened: Opened, ticket: LoadTicket,
                   out: Reply) -> None:
    """Answer from an opened upstream; owns ``ticket`` and ``opened.response`` from here on."""
    core.served(gw, call, ep, opened.status)
    call.ttft_s = gw.clock.now() - call.started
    clean = False
    try:
        hdrs = response_headers(opened.headers)
        hdrs["x-request-id"] = call.sreq.request_id
        hdrs[HDR_DESTINATION] = ep.id
        if not opened.streaming:
            ticket.first_token()
            call.response_bytes = len(opened.first)
            usage = usage_from_body(opened.first) if opened.status == 200 else None
            if usage is not None:
                call.prompt_tokens, call.output_tokens = usage.prompt_tokens, usage.completion_tokens
                call.cached_tokens = usage.cached_tokens
            clean = True
            await out.send(opened.status, hdrs, opened.first)
            return
        await out.start(opened.status, hdrs)
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
            return
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
    finally:
        ticket.release()
        if clean:
            opened.response.release()
        else:
            opened.response.close()  # drops the upstream connection: vLLM aborts the request
