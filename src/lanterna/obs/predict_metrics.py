"""Prometheus metrics of the latency predictor's accuracy (SLO-aware routing, docs/design/slo.md).

- ``lanterna_latency_prediction_abs_error_seconds{model_name, kind}`` (histogram): |predicted - measured|,
  ``kind`` = ``ttft`` | ``tpot``; the prediction is the one the routing decision used, made before the
  predictor learned from this request.
- ``lanterna_latency_prediction_ape{model_name, kind}`` (histogram): absolute percentage error as a ratio
  (|predicted - measured| / measured). MAPE over a window:
  ``rate(lanterna_latency_prediction_ape_sum[5m]) / rate(lanterna_latency_prediction_ape_count[5m])``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from lanterna.scheduler.predict import Observed

_ABS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_APE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
ABS_ERROR = "lanterna_latency_prediction_abs_error_seconds"
APE = "lanterna_latency_prediction_ape"


class PredictionMetrics:
    __slots__ = ("abs_error", "ape", "_children")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.abs_error = Histogram(ABS_ERROR, "Absolute error of predicted latency (TTFT, TPOT) in seconds.",
                                   ("model_name", "kind"), buckets=_ABS_BUCKETS, registry=registry)
        self.ape = Histogram(APE, "Absolute percentage error (ratio) of predicted latency (TTFT, TPOT).",
                             ("model_name", "kind"), buckets=_APE_BUCKETS, registry=registry)
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def _child(self, model: str, kind: str) -> tuple[Any, Any]:
        c = self._children.get((model, kind))
        if c is None:
            c = self._children[(model, kind)] = (self.abs_error.labels(model, kind), self.ape.labels(model, kind))
        return c

    def observe(self, model: str, seen: Observed) -> None:
        if seen.ttft_s is not None and seen.ttft_ape is not None:
            a, p = self._child(model, "ttft")
            a.observe(abs(seen.ttft_pred_s - seen.ttft_s))
            p.observe(seen.ttft_ape)
        if seen.tpot_s is not None and seen.tpot_ape is not None:
            a, p = self._child(model, "tpot")
            a.observe(abs(seen.tpot_pred_s - seen.tpot_s))
            p.observe(seen.tpot_ape)
