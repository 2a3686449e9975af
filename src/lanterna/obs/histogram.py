"""A lean Prometheus histogram for per-request observations (same exposition as ``prometheus_client``'s).

Why not ``prometheus_client.Histogram``: its ``observe`` checks observability, takes a lock for the sum and
another for the bucket, and walks the bucket bounds in a Python loop: ~3 us per call, and the gateway makes
8-16 of them per request. Here ``observe`` is a C ``bisect`` plus two plain additions (~0.3 us). No locks:
the gateway observes and renders ``/metrics`` on its one event-loop thread, and a scrape that reads counts
while another thread adds would at worst see one observation in the buckets and not yet in the sum.

Exposition is the usual ``<name>_bucket{le=...}`` (cumulative), ``<name>_count`` and ``<name>_sum`` through a
registered collector, with ``le`` rendered as ``prometheus_client`` renders it, so scrapers and dashboards
see no difference.

    h = LeanHistogram("x_seconds", "help", ("model_name",), buckets=(0.1, 1.0), registry=r)
    child = h.labels("m")        # resolve once per label set; the hot path keeps the child
    child.observe(0.25)
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["HistogramChild", "LeanHistogram"]


class HistogramChild:
    """One label set's buckets (per bucket, not cumulative) and sum."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # bisect_left: the first bound >= amount, i.e. Prometheus's ``amount <= le``; the last bound is +Inf.
        self.counts[bisect_left(self._bounds, amount)] += 1
        self.sum += amount

    @property
    def count(self) -> int:
        return sum(self.counts)


class LeanHistogram(Collector):
    """A labelled histogram family; ``labels(*values)`` returns (and caches) the child for that label set.
    Without label names it is its own single child: call ``observe`` on it directly."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 buckets: Iterable[float], registry: CollectorRegistry | None = None) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._bounds = tuple(bounds)
        self._le: list[str] = [floatToGoString(b) for b in bounds]  # type: ignore[no-untyped-call]
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        self._default = self.labels() if not self.labelnames else None
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> HistogramChild:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = HistogramChild(self._bounds)
        return child

    def observe(self, amount: float) -> None:
        """Only for a histogram without labels."""
        if self._default is None:
            raise ValueError(f"{self.name} has labels {self.labelnames}: observe through labels(...)")
        self._default.observe(amount)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            acc = 0
            cumulative: list[tuple[str, float]] = []
            for le, n in zip(self._le, child.counts, strict=True):
                acc += n
                cumulative.append((le, float(acc)))
            fam.add_metric(list(key), cumulative, child.sum)
        yield fam
