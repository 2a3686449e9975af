"""The routing steps every face runs: prepare -> admit -> tokenize -> schedule -> attempts -> complete.

Transport-free: headers arrive as a mapping and the body as bytes; nothing here opens a socket or imports
aiohttp. The HTTP gateway (``gateway/dispatch.py``) moves the bytes; an Envoy ext_proc picker would answer
``call.order`` (primary + fallbacks) as headers and report the upstream's answer back the same way::

    call = prepare(state, headers, body, "chat")       # ValidationFailed / ModelNotFound / NoCapacity
    async with admit(state, call):                     # flow control; RateLimited / QueueTimeout
        await tokenize(state, call)                    # precise routing only
        order = schedule(state, call)                  # call.result, call.order, call.prefill
        for ep in order:
            ticket = begin_attempt(state, call, ep)    # breaker + load; attempt_timeout() bounds the wait
            ...  attempt_failed(...) / attempt_abandoned(...) / answered(...) -> RETRY or ANSWER
    complete(state, call)                              # finally: metrics, response_complete, access log (once)

A request refused before it became a call (``prepare`` raised: 400, 404, 503; or the face could not read its
body: 413) gets its access-log line from ``rejected``, so every request logs exactly one line. The face puts
the request's ``RequestTrace`` on ``call.trace``: ``admit``, ``schedule`` and the face's upstream attempts open
the ``admission``, ``schedule`` and ``upstream`` spans in it (no-ops unless tracing records).

Breaker verdicts (issue 9): a connect error, first-byte timeout or mid-stream death counts against the
endpoint; a 4xx is the client's and counts as a live endpoint; a 5xx is not judged at once. When the same
request then succeeds elsewhere, the 5xx counts against the replica that sent it; when a second replica
answers 5xx too, the request is at fault: retrying stops, the client gets that answer, and neither replica
is counted, so a handful of poison requests cannot open every breaker.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from enum import Enum
from types import TracebackType

import msgspec

from lanterna.auth.principal import Principal, anonymous, effective_fairness, effective_priority
from lanterna.endpoints.types import Endpoint
from lanterna.errors import (
    Forbidden,
    LanternaError,
    ModelNotFound,
    NoCapacity,
    UpstreamTimeout,
    ValidationFailed,
)
from lanterna.obs.access import AccessRecord
from lanterna.obs.tracing import SpanHandle
from lanterna.routing.accounting import LoadTicket
from lanterna.routing.call import InferenceCall
from lanterna.routing.fields import (
    HDR_FAIRNESS,
    HDR_MODEL_REWRITE,
    HDR_OBJECTIVE,
    HDR_REQUEST_TIMEOUT,
    HDR_SESSION,
    HDR_SLO_TPOT,
    HDR_SLO_TTFT,
    first_header,
    parse_body,
    prompt_text,
    prompt_token_ids,
    rewrite_body,
    slo_seconds,
)
from lanterna.routing.flow import DROPPED_REASON_HEADER, FlowController, FlowRequest
from lanterna.routing.flow import Admission as FlowAdmission
from lanterna.routing.latency import observe_latency
from lanterna.routing.pd import DECISION_DECODE_ONLY, DECISION_PREFILL_DECODE
from lanterna.routing.retries import attempt_order
from lanterna.routing.state import RoutingState
from lanterna.scheduler.framework.types import ApiKind, SchedRequest
from lanterna.scheduler.plugins.profile.disagg import DisaggProfileHandler

DEFAULT_MAX_TOKENS = 16  # vLLM's default for completions; only used for load estimates
NO_ENDPOINT_RETRY_AFTER_S = 5  # Retry-After for a known model with no ready endpoint (health checks run every ~1 s)


class Verdict(Enum):
    RETRY = "retry"  # try the next endpoint in ``call.order``
    ANSWER = "answer"  # give the client this answer


RETRY, ANSWER = Verdict.RETRY, Verdict.ANSWER


def no_ready_endpoint(target: str) -> NoCapacity:
    """503 + ``Retry-After`` for a known model whose endpoints are all down, found before dispatch or while the
    request's attempts ran (health checks declared them down): honest and retryable, unlike a 502."""
    return NoCapacity(f"no ready endpoint serves model {target!r}; retry shortly",
                      headers={"Retry-After": str(NO_ENDPOINT_RETRY_AFTER_S), DROPPED_REASON_HEADER: "no-ready-endpoint"})


# -- prepare ------------------------------------------------------------------------------------------------------


def resolve_model(state: RoutingState, requested: str | None, headers: Mapping[str, str]) -> str:
    """Requested name -> served name: header rewrite, then config rewrite, then weighted split."""
    gcfg = state.cfg.gateway
    if requested is None:
        bases = [c.id for c in state.store.model_cards() if c.parent is None]
        if len(bases) != 1:
            raise ValidationFailed("1 validation error: model: Field required", param="body.model")
        return bases[0]
    # The GAIE rewrite header is the platform's (an HTTPRoute filter sets it), not a client's: honoured only
    # when the deployment says its gateway sets it (auth.forward_model_rewrite_header).
    hdr = headers.get(HDR_MODEL_REWRITE) if state.cfg.auth.forward_model_rewrite_header else None
    target = hdr or gcfg.model_rewrites.get(requested, requested)
    split = gcfg.traffic_split.get(target)
    if split:
        total = sum(t.weight for t in split)
        if total > 0:
            x = state.rng.random() * total
            for t in split:
                x -= t.weight
                if x < 0:
                    return t.model
            return split[-1].model
    return target


def _deadline(state: RoutingState, headers: Mapping[str, str], started: float) -> float | None:
    t = state.cfg.gateway.timeouts
    limit = t.request_s
    asked = headers.get(HDR_REQUEST_TIMEOUT)
    if asked:
        try:
            v = float(asked)
        except ValueError:
            raise ValidationFailed(f"{HDR_REQUEST_TIMEOUT} must be a number of seconds",
                                   param=HDR_REQUEST_TIMEOUT) from None
        if not math.isfinite(v) or v <= 0:
            raise ValidationFailed(f"{HDR_REQUEST_TIMEOUT} must be a positive number of seconds",
                                   param=HDR_REQUEST_TIMEOUT)
        limit = v
    if limit is None:
        return None
    return started + min(limit, t.max_request_s)


_MAX_TOKENS_ESTIMATE = 1 << 24  # beyond any context window: only the gateway's estimates are clamped


def _bounded_tokens(n: int | None) -> int | None:
    """A client's max_tokens as the gateway's load and deadline estimates use it: JSON allows any integer
    (10**100 included); the body still goes upstream untouched and the model server judges it."""
    return None if n is None else max(0, min(n, _MAX_TOKENS_ESTIMATE))


def prepare(state: RoutingState, headers: Mapping[str, str], body: bytes, kind: ApiKind, *,
            model: str | None = None, request_id: str = "", started: float | None = None,
            principal: Principal | None = None) -> InferenceCall:
    """Parse the body, resolve the model, find candidates and build the ``SchedRequest``.

    Raises ``ValidationFailed`` (400), ``ModelNotFound`` (404: the name is unknown) or ``NoCapacity`` (503 with
    ``Retry-After``: the model is known but no endpoint serving it is ready). Counts nothing, so
    ``/debug/score`` can score exactly what a request would. ``started``: when the face got the request
    (the state's clock; default now).

    ``principal``: who is calling (an API key's rights); None is the anonymous caller of open mode. Client
    headers never buy more than it allows: priority is capped at its ceiling, the fairness id is its tenant
    (a header may only sub-divide it), and a model it may not use is refused (403)."""
    if started is None:
        started = state.clock.now()
    request_bytes = len(body)
    p = principal if principal is not None else anonymous(state.cfg.auth.anonymous_max_priority)
    fields = parse_body(body, kind)
    requested = model or fields.model
    limited = p.models is not None  # a key limited to some models (None: every model, open mode included)
    if limited and requested is not None and not p.may_use(requested):
        raise Forbidden(f"This API key may not use the model `{requested}`.", param="model")
    target = resolve_model(state, requested, headers)
    if limited and not p.may_use(target) and (requested is None or target != requested):
        raise Forbidden(f"This API key may not use the model `{target}`.", param="model")
    candidates = state.store.candidates(target)
    if not candidates and state.flow is not None and target in state.cfg.flowcontrol.hold_models:
        state.refresh_hold()  # scale from zero: wait in flow control for a replica (``admit``)
        if state.on_hold is not None:
            state.on_hold(target)
    elif not candidates:
        known = state.store.known_models()
        if (target not in known and not any(target in e.models for e in state.store.all())
                and target not in state.cfg.flowcontrol.hold_models):
            raise ModelNotFound(f"The model `{target}` does not exist. Valid aliases: {', '.join(known) or '(none)'}.",
                                param="model")
        raise no_ready_endpoint(target)
    if target != fields.model:
        body = rewrite_body(body, model=target)
    parent = state.store.base_model_of(target)
    gcfg = state.cfg.gateway
    objective, fairness = first_header(headers, HDR_OBJECTIVE), first_header(headers, HDR_FAIRNESS)
    sreq = SchedRequest(
        request_id=request_id,
        model=parent or target,
        prompt_text=prompt_text(fields, kind),
        kind=kind,
        headers=headers,
        lora=target if parent else None,
        # no header (most requests): priority 0 under the ceiling, the tenant's own flow
        priority=effective_priority(objective, gcfg.objectives, p) if objective else min(0, p.max_priority),
        fairness_id=effective_fairness(fairness, p) if fairness else p.tenant,
        session_token=headers.get(HDR_SESSION),
        max_tokens=_bounded_tokens(fields.max_tokens if fields.max_tokens is not None
                                   else fields.max_completion_tokens),
        token_ids=prompt_token_ids(fields, kind),
        cache_salt=fields.cache_salt,
        slo_ttft_s=slo_seconds(headers, HDR_SLO_TTFT),
        slo_tpot_s=slo_seconds(headers, HDR_SLO_TPOT),
        received_at=started,
    )
    # model_name is the requested name only when it is one we know (bounded label cardinality).
    named = requested if requested in gcfg.model_rewrites or requested in gcfg.traffic_split else target
    return InferenceCall(kind=kind, fields=fields, requested=requested, target=target, candidates=candidates,
                         body=body, sreq=sreq, labels=(named or target, target), started=started,
                         deadline=_deadline(state, headers, started), request_bytes=request_bytes)


# -- admit ----------------------------------------------------------------------------------------------------------


class Admission:
    """``async with admit(state, call)``: counts the request as running, then holds a flow-control slot (when
    flow control is on) until the block exits. A face that cannot use ``async with`` across its callbacks
    (ext_proc: headers in one message, response in another) calls ``__aenter__`` / ``__aexit__`` itself."""

    __slots__ = ("_state", "_call", "_inner")

    def __init__(self, state: RoutingState, call: InferenceCall) -> None:
        self._state = state
        self._call = call
        self._inner: FlowAdmission | None = None

    async def __aenter__(self) -> None:
        call, state = self._call, self._state
        if call._objective is None:
            obj = call._objective = state.metrics.objective(*call.labels)
            obj.request_total.inc()
            obj.running.inc()
        flow, trace = state.flow, call.trace
        if trace.recording:
            with trace.span("admission"):
                if flow is not None:
                    await self._hold(flow)
        elif flow is not None:  # the common case: no span context manager at all
            await self._hold(flow)

    async def _hold(self, flow: FlowController) -> None:
        call = self._call
        sreq = call.sreq
        slo = sreq.slo_ttft_s
        adm = flow.admit(FlowRequest(sreq.request_id, sreq.fairness_id, sreq.priority, call.target,
                                     slo_deadline=call.started + slo if slo is not None else None))
        await adm.__aenter__()
        self._inner = adm
        if not call.candidates:  # held at zero replicas (``prepare``): a replica is ready now
            call.candidates = self._state.store.candidates(call.target)
            if not call.candidates:
                self._inner = None
                await adm.__aexit__(None, None, None)
                raise no_ready_endpoint(call.target)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        inner, self._inner = self._inner, None
        if inner is not None:
            await inner.__aexit__(exc_type, exc, tb)


def admit(state: RoutingState, call: InferenceCall) -> Admission:
    return Admission(state, call)


# -- tokenize -----------------------------------------------------------------------------------------------------


def sync_block_size(state: RoutingState, model: str) -> int | None:
    """Before the first KV event of ``model``, take its block size from the scraped ``cache_config_info``."""
    index = state.kv_index
    if index is None:
        return None
    bs = index.block_size_for(model)
    if bs is None:
        for ep in state.store.all():
            if ep.metrics.block_size and ep.serves(model):
                index.set_block_size(model, ep.metrics.block_size)
                return int(ep.metrics.block_size)
    return bs


async def tokenize(state: RoutingState, call: InferenceCall) -> None:
    """Fill ``sreq.token_ids`` for the precise scorer (None stays None: the scorer then abstains)."""
    pool = state.tokenizer
    if pool is None:
        return
    sreq = call.sreq
    sync_block_size(state, sreq.model)
    if sreq.token_ids is not None:
        return
    if sreq.kind == "chat":
        sreq.token_ids = await pool.tokenize_chat(sreq.model, msgspec.json.decode(call.fields.messages))
    else:
        sreq.token_ids = await pool.tokenize_prompt(sreq.model, sreq.prompt_text)


# -- schedule -----------------------------------------------------------------------------------------------------


def schedule(state: RoutingState, call: InferenceCall) -> list[Endpoint]:
    """Pick (``NoCapacity`` when nothing fits): fills ``call.result``, ``call.order`` (the scheduler's picks then
    least-loaded fallbacks, breaker-open endpoints left out unless all are) and ``call.prefill`` (P/D)."""
    trace = call.trace
    if not trace.recording:  # the common case: no span context manager at all
        return _schedule(state, call, None)
    with trace.span("schedule") as span:
        return _schedule(state, call, span)


def _schedule(state: RoutingState, call: InferenceCall, span: SpanHandle | None) -> list[Endpoint]:
    m = state.metrics
    now = state.clock.now()
    allowed = state.breakers.allowed(call.candidates, now)
    sched = call.scheduler = state.scheduler  # this call's scheduler, even if a reload swaps the state's
    try:
        result = call.result = sched.schedule(call.sreq, allowed)
    except NoCapacity:
        m.scheduled_failed.inc()
        raise
    m.scheduled_ok.inc()
    m.scheduler_e2e.observe(state.clock.now() - now)
    sched.pre_request(call.sreq, result)
    order = call.order = attempt_order(result.targets, allowed, state.cfg.gateway.retries.max_attempts)
    pf = call.prefill = result.prefill()
    if isinstance(sched.handler, DisaggProfileHandler):
        pd = pf is not None and bool(order) and pf.id != order[0].id
        m.disagg_decisions.labels(call.labels[0], DECISION_PREFILL_DECODE if pd else DECISION_DECODE_ONLY).inc()
    if span is not None:
        span.set("lanterna.endpoint", order[0].id if order else "")
        span.set("lanterna.profile", result.primary_profile or "")
        if pf is not None:
            span.set("lanterna.prefill_endpoint", pf.id)
    return order


# -- attempts -----------------------------------------------------------------------------------------------------


def begin_attempt(state: RoutingState, call: InferenceCall, ep: Endpoint) -> LoadTicket:
    """An attempt is about to be sent to ``ep``: claim its breaker (the half-open probe) and its load.

    Every attempt must end in exactly one of ``attempt_failed``, ``attempt_abandoned`` or ``answered``."""
    if call.attempts:
        state.metrics.retries_total.inc()
    call.attempts += 1
    state.breakers.get(ep.id).begin(state.clock.now())
    sreq = call.sreq
    max_tokens = sreq.max_tokens if sreq.max_tokens is not None else DEFAULT_MAX_TOKENS
    return LoadTicket(ep, sreq.num_prompt_tokens_estimate, max(0, max_tokens), sreq.lora)


def attempt_timeout(state: RoutingState, call: InferenceCall, ep: Endpoint) -> float:
    """How long to wait for ``ep``'s first bytes: queue + prefill estimate with a floor, capped; a non-streaming
    answer also needs its decode time. Never past the request's deadline (``UpstreamTimeout`` once it passed)."""
    t = state.cfg.gateway.timeouts
    prefill = call.sreq.num_prompt_tokens_estimate + ep.load.in_flight_prefill_tokens
    wait = min(t.first_byte_s, t.first_byte_floor_s + prefill / t.prefill_tokens_per_s
               + ep.metrics.num_waiting * t.queue_s_per_waiting)
    if not call.fields.stream:
        mt = call.sreq.max_tokens
        wait += mt * t.decode_s_per_token if mt is not None else t.stream_idle_s
    if call.deadline is not None:
        left = call.deadline - state.clock.now()
        if left <= 0:
            raise UpstreamTimeout("the request's deadline passed before an upstream replica answered")
        wait = min(wait, left)
    return wait


def attempt_failed(state: RoutingState, call: InferenceCall, ep: Endpoint, reason: str) -> None:
    """The endpoint failed this attempt (``connect``, ``timeout``, ``unhealthy``, ``error``, ``mid_stream``)."""
    _count_failure(state, ep, reason)


def attempt_abandoned(state: RoutingState, ep: Endpoint) -> None:
    """The attempt ended with no verdict on the endpoint (client gone, cancelled): free a half-open probe slot."""
    state.breakers.get(ep.id).abandon()


def answered(state: RoutingState, call: InferenceCall, ep: Endpoint, status: int, *, last: bool) -> Verdict:
    """``ep`` answered ``status`` (first bytes in hand, nothing sent to the client yet): retry or answer.

    ``last``: no endpoint is left to try. See the module docstring for the 5xx rule."""
    if status < 500:
        state.breakers.get(ep.id).on_success()
        if status < 400 and call.pending_5xx is not None:
            _count_failure(state, call.pending_5xx, "http_5xx")  # it failed what another replica served
        call.pending_5xx = None
        return ANSWER
    state.breakers.get(ep.id).abandon()  # judged later, or never
    if call.pending_5xx is not None and call.pending_5xx.id != ep.id:
        call.pending_5xx = None  # two replicas refused it: the request's fault, no breaker counts
        return ANSWER
    call.pending_5xx = ep
    return ANSWER if last else RETRY


def _count_failure(state: RoutingState, ep: Endpoint, reason: str) -> None:
    state.metrics.upstream_failures_total.labels(ep.id, reason).inc()
    state.breakers.get(ep.id).on_failure(state.clock.now())


def served(state: RoutingState, call: InferenceCall, ep: Endpoint, status: int) -> None:
    """The client gets ``ep``'s answer: record where it went (``complete`` reads this)."""
    call.endpoint = ep
    call.status = status


# -- complete -----------------------------------------------------------------------------------------------------

CLIENT_CLOSED = 499  # access-log status of a request whose client left before any answer (nginx's convention)
CLIENT_GONE = "client_disconnected"  # ``call.error`` when the client left before the end of the answer


def complete(state: RoutingState, call: InferenceCall, status: int | None = None) -> None:
    """The one place per-request outcomes are recorded (idempotent): the scheduler's ``response_complete``,
    the objective metrics, the access-log line and the request span's attributes. ``status`` overrides the
    client-facing status (an error raised instead of an upstream answer)."""
    if call._completed:
        return
    call._completed = True
    if status is not None:
        call.status = status
    duration = call.duration_s = state.clock.now() - call.started
    obj = call._objective
    if obj is not None:
        obj.running.dec()
    ep = call.endpoint
    if ep is not None and call.result is not None and call.scheduler is not None:
        call.scheduler.response_complete(call.sreq, call.result, ep.id, call.cached_tokens)
        observe_latency(state, call, ep)
    m = state.metrics
    if call.status >= 400:
        m.request_error_total.labels(*call.labels, str(call.status)).inc()
    if ep is not None:
        (obj or m.objective(*call.labels)).observe_completion(
            duration, call.request_bytes, call.response_bytes, call.prompt_tokens, call.output_tokens,
            call.cached_tokens)
    trace = call.trace
    if trace.recording:
        trace.set("lanterna.request_id", call.request_id)
        trace.set("lanterna.model", call.target)
        if ep is not None:
            trace.set("lanterna.endpoint", ep.id)
        trace.set("lanterna.retries", call.retries)
    log = state.access_log
    if log is not None and log.enabled:
        log.emit(access_record(call))


def access_record(call: InferenceCall) -> AccessRecord:
    """The access-log line of a completed call (times in ms, addresses of the endpoints that served it).
    Reads the call's fields directly (not its properties): this runs once per request."""
    duration = call.duration_s or 0.0
    ep, pf, sreq, result, ttft = call.endpoint, call.prefill, call.sreq, call.result, call.ttft_s
    status = call.status or (CLIENT_CLOSED if call.error == CLIENT_GONE else 500)
    return AccessRecord(
        ts=time.time() - duration, request_id=sreq.request_id, method=call.method, path=call.path, status=status,
        duration_ms=round(duration * 1e3, 3), model=call.requested or call.target, adapter=sreq.lora,
        endpoint=ep.address if ep is not None else None,
        prefill_endpoint=pf.address if pf is not None and ep is not None and pf.id != ep.id else None,
        profile=result.primary_profile if result is not None else None, prompt_tokens=call.prompt_tokens,
        cached_tokens=call.cached_tokens, output_tokens=call.output_tokens,
        ttft_ms=round(ttft * 1e3, 3) if ttft is not None else None,
        retries=call.attempts - 1 if call.attempts > 1 else 0, stream=bool(call.fields.stream),
        fairness_id=sreq.fairness_id, priority=sreq.priority, client=call.client, error=call.error)


def rejected(state: RoutingState, err: LanternaError, headers: Mapping[str, str], body: bytes, kind: ApiKind, *,
             request_id: str, started: float, method: str = "POST", path: str = "", client: str | None = None,
             principal: Principal | None = None) -> None:
    """The access-log line of a request refused before it became a call (``prepare`` raised, or the body could
    not be read). Off the hot path: the body is parsed again, leniently, for the model and stream flag."""
    log = state.access_log
    if log is None or not log.enabled:
        return
    model: str | None = None
    stream = False
    try:
        fields = parse_body(body, kind)
        model, stream = fields.model, bool(fields.stream)
    except LanternaError:
        pass
    gcfg = state.cfg.gateway
    p = principal if principal is not None else anonymous(state.cfg.auth.anonymous_max_priority)
    duration = state.clock.now() - started
    log.write(AccessRecord(
        ts=time.time() - duration, request_id=request_id, method=method, path=path, status=err.status,
        duration_ms=round(duration * 1e3, 3), model=model, stream=stream,
        fairness_id=effective_fairness(first_header(headers, HDR_FAIRNESS), p),
        priority=effective_priority(first_header(headers, HDR_OBJECTIVE), gcfg.objectives, p), client=client,
        error=error_reason(err)))


def error_reason(err: LanternaError) -> str:
    """What the access log says went wrong: flow control's drop reason when it gave one, else the error type."""
    return err.headers.get(DROPPED_REASON_HEADER) or err.error_type
