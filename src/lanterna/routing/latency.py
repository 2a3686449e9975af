"""Feed a completed request's measured TTFT and TPOT to the latency predictor that routed it (SLO routing).

One call from ``core.complete``; a no-op (one dict lookup) unless ``predicted-latency-scorer`` made the pick.
TTFT is measured from the first byte (``call.ttft_s``, from ``call.started``); TPOT is the mean time per output
token after the first, ``(duration - ttft) / (output_tokens - 1)``, known only with two or more tokens.
Only successful answers teach: an error's timing says nothing about the law the predictor learns.
"""

from __future__ import annotations

from lanterna.endpoints.types import Endpoint
from lanterna.routing.call import InferenceCall
from lanterna.routing.state import RoutingState
from lanterna.scheduler.predict import STATE_LATENCY_DECISION, record_latency


def observe_latency(state: RoutingState, call: InferenceCall, ep: Endpoint) -> None:
    sreq = call.sreq
    if STATE_LATENCY_DECISION not in sreq.state:
        return
    if call.status >= 400 or call.ttft_s is None or call.error is not None:
        sreq.state.pop(STATE_LATENCY_DECISION, None)
        return
    tpot = None
    n, dur = call.output_tokens, call.duration_s
    if n is not None and n >= 2 and dur is not None and dur > call.ttft_s:
        tpot = (dur - call.ttft_s) / (n - 1)
    seen = record_latency(sreq, ep.id, call.started + call.ttft_s, tpot)
    if seen is not None:
        state.metrics.prediction.observe(call.model, seen)
