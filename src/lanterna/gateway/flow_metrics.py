"""Flow control as Prometheus metrics, read from ``FlowController.stats()`` at scrape time.

A collector (not counters bumped on the hot path): admission costs nothing extra, and series for a flow
vanish once its queue drains, so label cardinality stays bounded by what is queued now.

GAIE names where GAIE defines one (labels ``inference_pool``, ``fairness_id``, ``priority``):
- ``inference_extension_flow_control_queue_size``: requests queued per (fairness id, priority); sum by
  ``priority`` for the size of each priority band.
- ``inference_extension_flow_control_pool_saturation``: 1 while every ready endpoint is saturated.

Lanterna's, in the same style:
- ``lanterna_flow_control_queue_band_size{priority}``: requests queued per priority band (present bands).
- ``lanterna_flow_control_in_flight_requests``: requests holding a dispatch slot.
- ``lanterna_flow_control_rejected_requests_total{reason, dropped_reason}``: requests that never dispatched,
  by cause (shed, saturated, queue_full, evicted, ttl_expired, cancelled) and the llm-d
  ``x-llm-d-request-dropped-reason`` value the client saw (cancelled: the client left, nothing was sent).
- ``lanterna_flow_control_requests_total{outcome}``: admitted, dispatched, enqueued (had to wait).
- ``lanterna_flow_control_queue_wait_seconds_total``: summed time dispatched requests spent queued.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from lanterna.flowcontrol import DropReason, FlowStats


class FlowCollector(Collector):
    def __init__(self, stats: Callable[[], FlowStats], saturated: Callable[[], bool], pool: str) -> None:
        self._stats = stats
        self._saturated = saturated
        self._pool = pool

    def describe(self) -> list[object]:
        return []  # collected on demand; no fixed series to pre-describe

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s, pool = self._stats(), self._pool
        q = GaugeMetricFamily("inference_extension_flow_control_queue_size",
                              "Number of requests currently queued, per fairness id and priority.",
                              labels=("inference_pool", "fairness_id", "priority"))
        for (fid, prio), n in sorted(s.queued_by_flow.items()):
            q.add_metric((pool, fid, str(prio)), n)
        yield q
        band = GaugeMetricFamily("lanterna_flow_control_queue_band_size",
                                 "Number of requests currently queued per priority band.",
                                 labels=("inference_pool", "priority"))
        for prio, n in sorted(s.queued_by_priority.items()):
            band.add_metric((pool, str(prio)), n)
        yield band
        yield _gauge("inference_extension_flow_control_pool_saturation",
                     "1 while every ready endpoint is saturated (flow control holds requests).",
                     pool, 1.0 if self._saturated() else 0.0)
        yield _gauge("lanterna_flow_control_in_flight_requests", "Requests holding a flow-control dispatch slot.",
                     pool, s.in_flight)
        rej = CounterMetricFamily("lanterna_flow_control_rejected_requests",
                                  "Requests that never dispatched, by cause and llm-d dropped reason.",
                                  labels=("inference_pool", "reason", "dropped_reason"))
        for reason in DropReason:
            dropped = "" if reason is DropReason.CANCELLED else reason.header
            rej.add_metric((pool, reason.value, dropped), s.dropped.get(reason.value, 0))
        yield rej
        req = CounterMetricFamily("lanterna_flow_control_requests", "Flow-control admissions by outcome.",
                                  labels=("inference_pool", "outcome"))
        for outcome, n in (("admitted", s.admitted_total), ("dispatched", s.dispatched_total),
                           ("enqueued", s.enqueued_total)):
            req.add_metric((pool, outcome), n)
        yield req
        wait = CounterMetricFamily("lanterna_flow_control_queue_wait_seconds",
                                   "Summed time dispatched requests spent queued.", labels=("inference_pool",))
        wait.add_metric((pool,), s.queue_wait_s_sum)
        yield wait


def _gauge(name: str, doc: str, pool: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=("inference_pool",))
    g.add_metric((pool,), value)
    return g
