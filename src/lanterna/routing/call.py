"""``InferenceCall``: one request's routing record, from parsed body to outcome.

Every face (the aiohttp gateway today, an Envoy ext_proc picker next) builds one with ``prepare`` and passes
it through the same steps (``lanterna.routing.core``); the steps fill the plan (scheduling result, attempt
order, prefill endpoint) and the outcome fields, and ``complete`` reads them once for metrics, the scheduler's
``response_complete``, the access-log line and the span attributes. Mutable by design: it is the request's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lanterna.endpoints.types import Endpoint
from lanterna.obs.metrics import ObjectiveChildren
from lanterna.obs.tracing import NO_TRACE, RequestTrace
from lanterna.routing.fields import RoutingFields
from lanterna.scheduler import Scheduler
from lanterna.scheduler.framework.types import ApiKind, SchedRequest, SchedulingResult


@dataclass(slots=True)
class InferenceCall:
    kind: ApiKind
    fields: RoutingFields
    requested: str | None  # the model the client named (None: the pool's only base model)
    target: str  # the served model after rewrites and traffic split (an adapter name for LoRA)
    candidates: list[Endpoint]  # ready endpoints serving ``target``
    body: bytes  # the body to forward (model rewritten when it changed)
    sreq: SchedRequest
    labels: tuple[str, str]  # (model_name, target_model_name): bounded metric labels
    started: float  # monotonic seconds (the state's clock)
    deadline: float | None = None  # monotonic seconds by which the client must have its answer
    request_bytes: int = 0  # the body as the client sent it
    # -- set by the face (access log, spans) ------------------------------------------------------------------
    trace: RequestTrace = NO_TRACE  # the request's trace: spans around the steps, context for the upstream
    method: str = "POST"
    path: str = ""
    client: str | None = None  # the client's address
    # -- the plan (``schedule``) ----------------------------------------------------------------------------
    scheduler: Scheduler | None = None  # the scheduler that planned it (a config reload may swap the state's)
    result: SchedulingResult | None = None
    order: list[Endpoint] = field(default_factory=list)  # attempt order: picks, then least-loaded fallbacks
    prefill: Endpoint | None = None  # P/D: the prefill endpoint, when the profile handler picked one
    # -- the outcome ------------------------------------------------------------------------------------------
    endpoint: Endpoint | None = None  # the endpoint whose answer the client got
    status: int = 0  # HTTP status the client got (0: not answered yet)
    attempts: int = 0
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    output_tokens: int | None = None
    ttft_s: float | None = None
    response_bytes: int = 0  # body bytes relayed to the client
    duration_s: float | None = None
    error: str | None = None  # the error type the client saw, if any
    pending_5xx: Endpoint | None = None  # a replica that answered 5xx; judged once another replica answers
    _objective: ObjectiveChildren | None = None
    _completed: bool = False

    @property
    def request_id(self) -> str:
        return self.sreq.request_id

    @property
    def model(self) -> str:
        """The base model (adapters resolve to their parent)."""
        return self.sreq.model

    @property
    def adapter(self) -> str | None:
        return self.sreq.lora

    @property
    def priority(self) -> int:
        return self.sreq.priority

    @property
    def fairness_id(self) -> str:
        return self.sreq.fairness_id

    @property
    def token_estimate(self) -> int:
        """Prompt tokens (estimated) plus the requested output: what a per-key token rate limit charges."""
        mt = self.sreq.max_tokens
        return self.sreq.num_prompt_tokens_estimate + (mt if mt is not None else 16)

    @property
    def stream(self) -> bool:
        return bool(self.fields.stream)

    @property
    def profile(self) -> str | None:
        return self.result.primary_profile if self.result is not None else None

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)
