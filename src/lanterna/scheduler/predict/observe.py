"""The per-request record that ties a routing decision to its measured latency, and the one call that closes it.

The ``predicted-latency-scorer`` leaves a ``LatencyDecision`` in ``req.state`` when the caller commits to its
pick (``pre_request``): the predictor, the endpoint, the features the prediction used and when it was made.
When the response ends, the caller (the gateway's ``core.complete``, the virtual cluster) calls
``record_latency`` once with when the first token came and the time per output token; without a decision
(another policy, no predictor) it is one dict lookup and returns None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lanterna.scheduler.framework.types import SchedRequest
    from lanterna.scheduler.predict.predictor import LatencyPredictor, Observed

STATE_LATENCY_DECISION = "lanterna/predicted-latency/decision"
"""``req.state`` key: the ``LatencyDecision`` of the committed pick."""


@dataclass(frozen=True, slots=True)
class LatencyDecision:
    predictor: LatencyPredictor
    model: str
    endpoint_id: str
    ttft_x: tuple[float, ...]
    tpot_x: tuple[float, ...]
    scheduled_at: float  # the scheduler's clock when the pick was made (TTFT is predicted from here)


def record_latency(req: SchedRequest, endpoint_id: str, first_token_at: float | None,
                   tpot_s: float | None) -> Observed | None:
    """Feed one completed request to the predictor that routed it (at most once per request).

    ``first_token_at``: the same clock's time of the first token (None: no token came); ``tpot_s``: mean time
    per output token after the first (None: fewer than two tokens or unknown). A request served by another
    endpoint than the one predicted for (a retry) teaches nothing: its features described another replica."""
    d = req.state.pop(STATE_LATENCY_DECISION, None)
    if not isinstance(d, LatencyDecision) or d.endpoint_id != endpoint_id:
        return None
    ttft = first_token_at - d.scheduled_at if first_token_at is not None else None
    if ttft is None and tpot_s is None:
        return None
    return d.predictor.observe(d.model, d.ttft_x, d.tpot_x, ttft, tpot_s)
