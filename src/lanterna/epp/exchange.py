"""One ext_proc stream = one HTTP request Envoy proxies: the routing core's steps, driven by Envoy's messages.

Envoy opens a ``Process`` stream per request and sends, in order::

    request_headers -> request_body* (until end_of_stream) [-> request_trailers]
    -> response_headers -> response_body* (until end_of_stream) [-> response_trailers]

The exchange answers with the same steps the HTTP gateway runs (``lanterna.routing.core``), only the bytes
move elsewhere::

    body complete  -> prepare -> admit (flow control; may queue) -> tokenize -> schedule -> begin_attempt
                   => x-gateway-destination-endpoint (+ envoy.lb metadata, x-prefiller-host-port, body)
    response hdrs  -> answered + served (status; the endpoint Envoy reports it used, when it fell back)
    response body  -> first token (prefill share of the load), usage from the tail
    response end   -> ticket released, admission left, complete (metrics, the scheduler's response_complete)

Body modes: ``FULL_DUPLEX_STREAMED`` (GAIE's default) withholds the headers answer until the body has ended,
then returns headers and every body byte (Envoy forwards only what the picker sends back); ``BUFFERED`` lets
the headers through at once and answers the one body message with the header mutation and, when the model
was rewritten, the new body. Other paths than the two inference routes (``/v1/models``, ...) get a
least-loaded pick from the headers alone, with no call, no accounting.

NOTE: every exit settles. Errors before the pick answer an ``ImmediateResponse`` and complete the call; a
stream Envoy cancels (client gone, upstream reset, timeout) reaches ``close()`` through the servicer's
``finally``: load tickets released, the half-open probe freed, the flow slot returned, ``complete`` once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from lanterna.endpoints.types import Endpoint
from lanterna.epp import messages as msg
from lanterna.epp.messages import BodyMode, ProcessingRequest, ProcessingResponse
from lanterna.epp.response import ResponseTap
from lanterna.errors import LanternaError, NoCapacity, PayloadTooLarge
from lanterna.routing import core
from lanterna.routing.accounting import LoadTicket
from lanterna.routing.call import InferenceCall
from lanterna.routing.core import Admission
from lanterna.routing.fields import HDR_DESTINATION, HDR_PREFILLER, HDR_REQUEST_ID
from lanterna.routing.flow import DROPPED_REASON_HEADER
from lanterna.routing.retries import attempt_order
from lanterna.routing.state import RoutingState
from lanterna.scheduler.framework.types import ApiKind

KIND_BY_PATH: dict[str, ApiKind] = {"/v1/completions": "completions", "/v1/chat/completions": "chat"}

_prefix = os.urandom(4).hex()
_counter = 0


def _new_request_id() -> str:
    """Envoy normally sends ``x-request-id``; this covers a data plane that does not (cheap, unique per process)."""
    global _counter
    _counter += 1
    return f"{_prefix}-e{_counter:x}"


@dataclass(frozen=True, slots=True)
class Modes:
    """Body modes the Envoy filter is configured with, used until a request's ``protocol_config`` says otherwise."""

    request_body: BodyMode = msg.FULL_DUPLEX
    response_body: BodyMode = msg.FULL_DUPLEX
    max_body_bytes: int = 8 * 1024 * 1024


class Exchange:
    """Protocol: ``await on_message(req)`` for each ProcessingRequest in order, sending every response it
    returns (possibly none yet); then ``await close()`` exactly once, however the stream ended."""

    __slots__ = ("_state", "_modes", "_req_mode", "_resp_mode", "_headers", "_rid", "_kind", "_subset", "_body",
                 "_decided", "_rejected", "_call", "_adm", "_ep", "_ticket", "_pf_ticket", "_answered", "_tap", "_settled")

    def __init__(self, state: RoutingState, modes: Modes) -> None:
        self._state = state
        self._modes = modes
        self._req_mode = modes.request_body
        self._resp_mode = modes.response_body
        self._headers: dict[str, str] = {}
        self._rid = ""
        self._kind: ApiKind | None = None
        self._subset: list[str] | None = None
        self._body = bytearray()
        self._decided = False  # headers answered with a pick (or an immediate response sent)
        self._rejected = False  # an ImmediateResponse went out: Envoy ends the stream, nothing more to answer
        self._call: InferenceCall | None = None
        self._adm: Admission | None = None
        self._ep: Endpoint | None = None
        self._ticket: LoadTicket | None = None
        self._pf_ticket: LoadTicket | None = None
        self._answered = False
        self._tap: ResponseTap | None = None
        self._settled = False

    @property
    def call(self) -> InferenceCall | None:
        return self._call

    async def on_message(self, req: ProcessingRequest) -> list[ProcessingResponse]:
        if self._rejected:
            return []
        which = req.WhichOneof("request")
        if which == "request_headers":
            return await self._request_headers(req)
        if which == "request_body":
            return await self._request_body(req)
        if which == "request_trailers":
            out = [] if self._decided else await self._decide(full_duplex=self._req_mode == msg.FULL_DUPLEX,
                                                               body_eos=False)
            return out if self._rejected else [*out, msg.trailers_response(request=True)]
        if which == "response_headers":
            return await self._response_headers(req)
        if which == "response_body":
            return await self._response_body(req)
        if which == "response_trailers":
            await self._response_done()
            return [msg.trailers_response(request=False)]
        return []

    # -- request phase ----------------------------------------------------------------------------------------

    async def _request_headers(self, req: ProcessingRequest) -> list[ProcessingResponse]:
        if req.HasField("protocol_config"):
            pc = req.protocol_config
            self._req_mode, self._resp_mode = pc.request_body_mode, pc.response_body_mode
        h = self._headers = msg.header_map(req.request_headers)
        self._rid = h.get(HDR_REQUEST_ID) or _new_request_id()
        self._subset = msg.subset_hint(req)
        path = h.get(":path", "").partition("?")[0]
        kind = self._kind = KIND_BY_PATH.get(path) if h.get(":method", "POST") == "POST" else None
        if kind is None or self._req_mode not in (msg.FULL_DUPLEX, msg.BUFFERED, msg.BUFFERED_PARTIAL):
            return [self._pass_through()]  # nothing to parse, or a mode that cannot hold the headers back
        if req.request_headers.end_of_stream:
            return await self._decide(full_duplex=False, body_eos=True, at_headers=True)
        if self._req_mode == msg.FULL_DUPLEX:
            return []  # the headers answer waits for the body
        return [msg.request_headers_response()]

    async def _request_body(self, req: ProcessingRequest) -> list[ProcessingResponse]:
        rb = req.request_body
        if self._decided:  # passed through at the headers: hand the body on untouched
            if self._req_mode == msg.FULL_DUPLEX:
                return list(msg.streamed_body(rb.body, rb.end_of_stream))
            return [msg.empty_body_response(request=True)]
        self._body += rb.body
        if len(self._body) > self._modes.max_body_bytes:
            return self._reject(PayloadTooLarge(f"request body over the picker's limit of "
                                                f"{self._modes.max_body_bytes} bytes", param="body"))
        if self._req_mode == msg.FULL_DUPLEX:
            return await self._decide(full_duplex=True, body_eos=True) if rb.end_of_stream else []
        return await self._decide(full_duplex=False, body_eos=rb.end_of_stream)

    def _allowed(self, eps: Iterable[Endpoint]) -> list[Endpoint]:
        subset = self._subset
        if subset is None:
            return list(eps)
        allowed = set(subset)
        return [e for e in eps if e.address in allowed or e.id in allowed]

    def _pass_through(self) -> ProcessingResponse:
        """A request the core does not route (no inference body): least-loaded ready endpoints, no accounting."""
        self._decided = True
        state = self._state
        ready = self._allowed(e for e in state.store.all() if e.healthy)
        if not ready:
            return self._reject(NoCapacity("no ready endpoint", headers={
                "Retry-After": str(core.NO_ENDPOINT_RETRY_AFTER_S), DROPPED_REASON_HEADER: "no-ready-endpoint"}))[0]
        dest = msg.join_destinations(e.address for e in attempt_order((), ready, state.cfg.gateway.retries.max_attempts))
        return msg.request_headers_response({HDR_DESTINATION: dest}, dest)

    def _reject(self, err: LanternaError) -> list[ProcessingResponse]:
        self._decided = self._rejected = True
        return [msg.immediate(err, self._rid)]

    async def _decide(self, *, full_duplex: bool, body_eos: bool, at_headers: bool = False
                      ) -> list[ProcessingResponse]:
        """The body is complete: run the core's steps up to the pick and answer it (or an error)."""
        state = self._state
        kind = self._kind
        assert kind is not None
        self._decided = True
        body = bytes(self._body)
        try:
            call = core.prepare(state, self._headers, body, kind, request_id=self._rid)
            if self._subset is not None:
                call.candidates = self._allowed(call.candidates)
                if not call.candidates:
                    raise NoCapacity("no endpoint of the data plane's subset hint serves this model",
                                     headers={DROPPED_REASON_HEADER: "no-ready-endpoint"})
        except LanternaError as err:
            return self._reject(err)
        self._call = call
        adm = self._adm = core.admit(state, call)
        try:
            await adm.__aenter__()
            await core.tokenize(state, call)
            order = core.schedule(state, call)
        except LanternaError as err:
            call.status, call.error = err.status, err.error_type
            await self._settle()
            return self._reject(err)
        ep = self._ep = order[0]
        self._ticket = core.begin_attempt(state, call, ep)
        dest = msg.join_destinations(e.address for e in order)
        headers = {HDR_DESTINATION: dest}
        pf = call.prefill
        if pf is not None and pf.id != ep.id:
            # The decode side's sidecar prefills there; hold its prefill load until the first response byte.
            headers[HDR_PREFILLER] = pf.address
            self._pf_ticket = LoadTicket(pf, call.sreq.num_prompt_tokens_estimate, 1, call.sreq.lora)
        rewritten = call.body is not body
        if rewritten:
            headers["content-length"] = str(len(call.body))
        if at_headers:
            return [msg.request_headers_response(headers, dest)]
        if full_duplex:
            return [msg.request_headers_response(headers, dest), *msg.streamed_body(call.body, body_eos)]
        return [msg.buffered_body_response(headers, call.body if rewritten else None, dest)]

    # -- response phase ---------------------------------------------------------------------------------------

    async def _response_headers(self, req: ProcessingRequest) -> list[ProcessingResponse]:
        call, ep, state = self._call, self._ep, self._state
        if call is not None and ep is not None and not self._settled:
            h = msg.header_map(req.response_headers)
            try:
                status = int(h.get(":status", "0"))
            except ValueError:
                status = 0
            served = msg.served_endpoint(req)
            if served is not None and served not in (ep.address, ep.id):
                ep = self._fell_back(call, ep, served)
            core.answered(state, call, ep, status, last=True)
            core.served(state, call, ep, status)
            self._answered = True
            self._tap = ResponseTap(sse=h.get("content-type", "").startswith("text/event-stream"))
        out = [msg.response_headers_response()]
        if req.response_headers.end_of_stream:
            await self._response_done()
        return out

    def _fell_back(self, call: InferenceCall, ep: Endpoint, served: str) -> Endpoint:
        """Envoy went down the fallback list: move the attempt (and its load) to the endpoint that answered."""
        other = next((e for e in call.order if served in (e.address, e.id)), None) or self._state.store.get(served)
        if other is None:
            return ep
        if self._ticket is not None:
            self._ticket.release()
        core.attempt_abandoned(self._state, ep)  # Envoy's retry policy judged it; we saw no verdict
        self._ep = other
        self._ticket = core.begin_attempt(self._state, call, other)
        return other

    async def _response_body(self, req: ProcessingRequest) -> list[ProcessingResponse]:
        rb = req.response_body
        tap = self._tap
        if tap is not None:
            if tap.num_bytes == 0 and rb.body:
                self._first_token()
            tap.feed(rb.body)
        if self._resp_mode == msg.FULL_DUPLEX:
            out = list(msg.streamed_body(rb.body, rb.end_of_stream, request=False))
        else:
            out = [msg.empty_body_response(request=False)]
        if rb.end_of_stream:
            await self._response_done()
        return out

    def _first_token(self) -> None:
        call = self._call
        if call is not None and call.ttft_s is None:
            call.ttft_s = self._state.clock.now() - call.started
        if self._ticket is not None:
            self._ticket.first_token()
        if self._pf_ticket is not None:
            self._pf_ticket.release()

    async def _response_done(self) -> None:
        call, tap = self._call, self._tap
        if call is not None and tap is not None and not self._settled:
            usage = tap.usage()
            if usage is not None:
                call.prompt_tokens, call.output_tokens = usage.prompt_tokens, usage.completion_tokens
                call.cached_tokens = usage.cached_tokens
            else:
                call.output_tokens = tap.output_tokens_estimate()
        await self._settle()

    # -- settling -------------------------------------------------------------------------------------------

    async def _settle(self) -> None:
        """Release everything this request holds and record its outcome; idempotent."""
        if self._settled:
            return
        self._settled = True
        state, call = self._state, self._call
        if self._pf_ticket is not None:
            self._pf_ticket.release()
        if self._ticket is not None:
            self._ticket.release()
            if not self._answered and self._ep is not None:
                core.attempt_abandoned(state, self._ep)  # no answer seen: free a half-open probe slot
        adm, self._adm = self._adm, None
        try:
            if adm is not None:
                await adm.__aexit__(None, None, None)
        finally:
            if call is not None:
                core.complete(state, call)

    async def close(self) -> None:
        await self._settle()
