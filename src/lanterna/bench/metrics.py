"""Per-request records and per-stage summaries, with inference-perf definitions (BENCHMARKS.md).

TTFT = first non-empty token - send; TPOT = (last token - first token) / (output tokens - 1);
ITL = every gap between consecutive token arrivals, pooled over requests; E2E = end - send;
NTPOT = E2E / output tokens. Throughput divides by the stage span (max end - min send). Failed
requests count in failures by reason and never in latencies. The same code summarises HTTP runs and
virtual-cluster runs, so both produce the same report.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lanterna.bench.config import Slo

PERCENTILES = (50, 90, 95, 99)


@dataclass(slots=True)
class RequestRecord:
    """What one request did. Times are seconds on the runner's clock; ``error`` is a failure reason."""

    request_id: str
    stage: int
    scheduled_s: float
    send_s: float
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int | None = None
    first_token_s: float | None = None
    last_token_s: float | None = None
    end_s: float | None = None
    error: str | None = None
    endpoint: str | None = None
    group: int = -1
    traffic_class: str | None = None  # virtual cluster with flow control: the workload class it was drawn from
    itl_s: array[float] = field(default_factory=lambda: array("d"))

    def on_tokens(self, t: float, n: int = 1) -> None:
        """``n`` tokens arrived at ``t`` (a chunk may carry several; the gaps inside it are 0)."""
        if n <= 0:
            return
        if self.first_token_s is None:
            self.first_token_s = t
        elif self.last_token_s is not None:
            self.itl_s.append(t - self.last_token_s)
        if n > 1:
            self.itl_s.extend([0.0] * (n - 1))
        self.last_token_s = t
        self.output_tokens += n

    @property
    def ok(self) -> bool:
        return self.error is None and self.end_s is not None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.send_s

    @property
    def e2e_s(self) -> float | None:
        return None if self.end_s is None else self.end_s - self.send_s

    @property
    def tpot_s(self) -> float | None:
        if self.first_token_s is None or self.last_token_s is None or self.output_tokens < 2:
            return None
        return (self.last_token_s - self.first_token_s) / (self.output_tokens - 1)

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.request_id, "stage": self.stage, "scheduled_s": self.scheduled_s, "send_s": self.send_s,
            "ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "e2e_s": self.e2e_s,
            "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens, "error": self.error, "endpoint": self.endpoint, "group": self.group,
        }
        if self.traffic_class is not None:  # only then: records of runs without classes keep their bytes
            out["class"] = self.traffic_class
        return out


@dataclass(frozen=True, slots=True)
class Stats:
    """Distribution of one quantity over a stage (linear-interpolated percentiles)."""

    mean: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float

    def to_json(self) -> dict[str, float]:
        return {"mean": self.mean, "min": self.min, "max": self.max, "p50": self.p50, "p90": self.p90,
                "p95": self.p95, "p99": self.p99}


def stats(values: Any) -> Stats | None:
    """mean, min, max and p50/p90/p95/p99 (linear interpolation); None when there is no sample."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return None
    p50, p90, p95, p99 = (float(v) for v in np.percentile(arr, PERCENTILES))
    return Stats(float(arr.mean()), float(arr.min()), float(arr.max()), p50, p90, p95, p99)


def _js(s: Stats | None) -> dict[str, float] | None:
    return None if s is None else s.to_json()


@dataclass(frozen=True, slots=True)
class Latency:
    """Seconds; each None when no completed request gave a sample."""

    ttft: Stats | None
    tpot: Stats | None
    itl: Stats | None
    e2e: Stats | None
    ntpot: Stats | None

    def to_json(self) -> dict[str, Any]:
        return {"ttft": _js(self.ttft), "tpot": _js(self.tpot), "itl": _js(self.itl), "e2e": _js(self.e2e),
                "ntpot": _js(self.ntpot)}


@dataclass(frozen=True, slots=True)
class Throughput:
    """Per second of the stage span (max end - min send over completed requests)."""

    input_tokens_per_s: float
    output_tokens_per_s: float
    total_tokens_per_s: float
    requests_per_s: float

    def to_json(self) -> dict[str, float]:
        return {"input_tokens_per_s": self.input_tokens_per_s, "output_tokens_per_s": self.output_tokens_per_s,
                "total_tokens_per_s": self.total_tokens_per_s, "requests_per_s": self.requests_per_s}


@dataclass(frozen=True, slots=True)
class Goodput:
    share: float  # of all requests sent in the stage
    requests_per_s: float


@dataclass(frozen=True, slots=True)
class ClassSummary:
    """One traffic class (priority / tenant) of a stage: what flow control did to it and its latency."""

    num_requests: int
    num_completed: int
    failures: dict[str, int]
    ttft: Stats | None
    e2e: Stats | None

    def to_json(self) -> dict[str, Any]:
        return {"num_requests": self.num_requests, "num_completed": self.num_completed,
                "failures": self.failures, "ttft": _js(self.ttft), "e2e": _js(self.e2e)}


@dataclass(frozen=True, slots=True)
class StageSummary:
    """One stage's results. ``to_json`` gives the report's stage object (key order and keys are the format:
    ``goodput`` only with an SLO, ``classes`` only when requests carry a traffic class)."""

    num_requests: int
    num_completed: int
    num_failed: int
    num_incomplete: int
    failures: dict[str, int]  # by reason, sorted
    requested_rate: float | None
    concurrency: int | None
    achieved_rate: float | None
    scheduled_rate: float | None
    schedule_lag_s: Stats | None
    behind_schedule: bool
    latency: Latency
    duration_s: float
    throughput: Throughput
    input_tokens: int
    output_tokens: int
    goodput: Goodput | None
    prefix_cache_hit_rate: float | None
    classes: dict[str, ClassSummary] | None = None
    headroom: dict[str, Any] | None = None  # virtual cluster: the achievable bound (``cluster.headroom``)

    @property
    def ttft_p50_s(self) -> float | None:
        return None if self.latency.ttft is None else self.latency.ttft.p50

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "num_requests": self.num_requests, "num_completed": self.num_completed, "num_failed": self.num_failed,
            "num_incomplete": self.num_incomplete, "failures": self.failures,
            "requested_rate": self.requested_rate, "concurrency": self.concurrency,
            "achieved_rate": self.achieved_rate, "scheduled_rate": self.scheduled_rate,
            "schedule_lag_s": _js(self.schedule_lag_s), "behind_schedule": self.behind_schedule,
            "latency_s": self.latency.to_json(), "duration_s": self.duration_s,
            "throughput": self.throughput.to_json(),
            "tokens": {"input": self.input_tokens, "output": self.output_tokens},
        }
        if self.goodput is not None:
            out["goodput"] = {"share": self.goodput.share, "requests_per_s": self.goodput.requests_per_s}
        out["prefix_cache_hit_rate"] = self.prefix_cache_hit_rate
        if self.classes is not None:
            out["classes"] = {k: c.to_json() for k, c in self.classes.items()}
        if self.headroom is not None:
            out["headroom"] = self.headroom
        return out


def _rate(times: list[float]) -> float | None:
    """(n - 1) / (last - first): events per second over the span they cover."""
    if len(times) < 2:
        return None
    lo, hi = min(times), max(times)
    return (len(times) - 1) / (hi - lo) if hi > lo else None


def _meets(r: RequestRecord, slo: Slo) -> bool:
    checks = ((slo.ttft_s, r.ttft_s), (slo.tpot_s, r.tpot_s), (slo.e2e_s, r.e2e_s))
    return all(lim is None or (v is not None and v <= lim) for lim, v in checks)


def _failures(records: list[RequestRecord]) -> dict[str, int]:
    return dict(sorted(Counter(r.error for r in records if r.error is not None).items()))


def _classes(records: list[RequestRecord]) -> dict[str, ClassSummary] | None:
    by: dict[str, list[RequestRecord]] = {}
    for r in records:
        if r.traffic_class is not None:
            by.setdefault(r.traffic_class, []).append(r)
    if not by:
        return None
    out = {}
    for name in sorted(by):
        recs = by[name]
        ok = [r for r in recs if r.ok]
        out[name] = ClassSummary(len(recs), len(ok), _failures(recs),
                                 stats([r.ttft_s for r in ok if r.ttft_s is not None]),
                                 stats([r.e2e_s for r in ok if r.e2e_s is not None]))
    return out


def summarize(
    records: list[RequestRecord],
    *,
    requested_rate: float | None = None,
    concurrency: int | None = None,
    slo: Slo | None = None,
) -> StageSummary:
    """One stage's summary: counts, failures by reason, achieved vs requested rate, latencies,
    throughput, goodput, prefix-cache hit rate and, when requests carry one, per traffic class."""
    ok = [r for r in records if r.ok]
    failures = _failures(records)
    incomplete = sum(1 for r in records if r.error is None and r.end_s is None)
    achieved = _rate([r.send_s for r in records])
    # the schedule's own rate: a Poisson sample of 50 arrivals may honestly be 15% off the nominal rate,
    # so "behind" compares what was sent with what was scheduled, not with the nominal rate
    scheduled = _rate([r.scheduled_s for r in records])
    behind = bool(requested_rate and achieved and scheduled and achieved < 0.95 * scheduled)
    latency = Latency(
        ttft=stats([r.ttft_s for r in ok if r.ttft_s is not None]),
        tpot=stats([r.tpot_s for r in ok if r.tpot_s is not None]),
        itl=stats(np.concatenate([np.frombuffer(r.itl_s, dtype=np.float64) for r in ok]) if ok else []),
        e2e=stats([r.e2e_s for r in ok if r.e2e_s is not None]),
        ntpot=stats([r.e2e_s / r.output_tokens for r in ok if r.e2e_s is not None and r.output_tokens]),
    )
    n_in = sum(r.prompt_tokens for r in ok)
    n_out = sum(r.output_tokens for r in ok)
    if ok:
        span = max(r.end_s for r in ok if r.end_s is not None) - min(r.send_s for r in ok)
    else:
        span = 0.0

    def rate(x: float) -> float:
        return x / span if span > 0 else 0.0

    goodput = None
    if slo is not None and (slo.ttft_s or slo.tpot_s or slo.e2e_s):
        good = sum(1 for r in ok if _meets(r, slo))
        goodput = Goodput(good / len(records) if records else 0.0, rate(good))
    cached = [r for r in ok if r.cached_tokens is not None]
    prompt_cached = sum(r.prompt_tokens for r in cached)
    hit = sum(r.cached_tokens or 0 for r in cached) / prompt_cached if prompt_cached else None
    return StageSummary(
        num_requests=len(records), num_completed=len(ok), num_failed=sum(failures.values()),
        num_incomplete=incomplete, failures=failures, requested_rate=requested_rate, concurrency=concurrency,
        achieved_rate=achieved, scheduled_rate=scheduled, schedule_lag_s=stats([r.send_s - r.scheduled_s for r in records]),
        behind_schedule=behind, latency=latency, duration_s=span,
        throughput=Throughput(rate(n_in), rate(n_out), rate(n_in + n_out), rate(len(ok))),
        input_tokens=n_in, output_tokens=n_out, goodput=goodput, prefix_cache_hit_rate=hit,
        classes=_classes(records),
    )


def ratio(a: float | None, b: float | None) -> float:
    """a / b, NaN when either side is missing or b is 0."""
    if a is None or b is None or b == 0:
        return math.nan
    return a / b
