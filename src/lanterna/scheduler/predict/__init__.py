"""Latency prediction for SLO-aware routing (pure): TTFT and TPOT per endpoint, learned online.

``LatencyPredictor`` (online ridge per model, ``predictor.py``), its features (``features.py``), its prior
from the simulator's timing model (``bootstrap.py``) and the per-request record that feeds it measured
latencies (``observe.py``). The ``predicted-latency-scorer`` plugin uses it; docs/design/slo.md explains it.
"""

from lanterna.scheduler.predict.bootstrap import prior_from_profile, prior_from_step
from lanterna.scheduler.predict.observe import STATE_LATENCY_DECISION, LatencyDecision, record_latency
from lanterna.scheduler.predict.predictor import ErrorStats, LatencyPredictor, LatencyPrior, Observed

__all__ = [
    "STATE_LATENCY_DECISION",
    "ErrorStats",
    "LatencyDecision",
    "LatencyPredictor",
    "LatencyPrior",
    "Observed",
    "prior_from_profile",
    "prior_from_step",
    "record_latency",
]
