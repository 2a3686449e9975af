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
        return {
            "id": self.request_id, "stage": self.stage, "scheduled_s": self.scheduled_s, "send_s": self.send_s,
            "ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "e2e_s": self.e2e_s,
            "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens, "error": self.error, "endpoint": self.endpoint, "group": self.group,
        }


def stats(values: Any) -> dict[str, float] | None:
    """mean, min, max and p50/p90/p95/p99 (linear interpolation); None when there is no sample."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return None
    pct = np.percentile(arr, PERCENTILES)
    out = {"mean": float(arr.mean()), "min": float(arr.min()), "max": float(arr.max())}
    out.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)})
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


def summarize(
    records: list[RequestRecord],
    *,
    requested_rate: float | None = None,
    concurrency: int | None = None,
    slo: Slo | None = None,
) -> dict[str, Any]:
    """One stage's summary: counts, failures by reason, achieved vs requested rate, latencies,
    throughput, goodput and prefix-cache hit rate."""
    ok = [r for r in records if r.ok]
    failures = Counter(r.error for r in records if r.error is not None)
    incomplete = sum(1 for r in records if r.error is None and r.end_s is None)
    out: dict[str, Any] = {
        "num_requests": len(records), "num_completed": len(ok), "num_failed": sum(failures.values()),
        "num_incomplete": incomplete, "failures": dict(sorted(failures.items())),
        "requested_rate": requested_rate, "concurrency": concurrency,
    }
    out["achieved_rate"] = _rate([r.send_s for r in records])
    # the schedule's own rate: a Poisson sample of 50 arrivals may honestly be 15% off the nominal rate,
    # so "behind" compares what was sent with what was scheduled, not with the nominal rate
    out["scheduled_rate"] = _rate([r.scheduled_s for r in records])
    out["schedule_lag_s"] = stats([r.send_s - r.scheduled_s for r in records])
    out["behind_schedule"] = bool(
        requested_rate and out["achieved_rate"] and out["scheduled_rate"]
        and out["achieved_rate"] < 0.95 * out["scheduled_rate"]
    )
    out["latency_s"] = {
        "ttft": stats([r.ttft_s for r in ok if r.ttft_s is not None]),
        "tpot": stats([r.tpot_s for r in ok if r.tpot_s is not None]),
        "itl": stats(np.concatenate([np.frombuffer(r.itl_s, dtype=np.float64) for r in ok]) if ok else []),
        "e2e": stats([r.e2e_s for r in ok if r.e2e_s is not None]),
        "ntpot": stats([r.e2e_s / r.output_tokens for r in ok if r.e2e_s is not None and r.output_tokens]),
    }
    n_in = sum(r.prompt_tokens for r in ok)
    n_out = sum(r.output_tokens for r in ok)
    if ok:
        span = max(r.end_s for r in ok if r.end_s is not None) - min(r.send_s for r in ok)
    else:
        span = 0.0
    rate = (lambda x: x / span) if span > 0 else (lambda x: 0.0)
    out["duration_s"] = span
    out["throughput"] = {
        "input_tokens_per_s": rate(n_in), "output_tokens_per_s": rate(n_out),
        "total_tokens_per_s": rate(n_in + n_out), "requests_per_s": rate(len(ok)),
    }
    out["tokens"] = {"input": n_in, "output": n_out}
    if slo is not None and (slo.ttft_s or slo.tpot_s or slo.e2e_s):
        good = sum(1 for r in ok if _meets(r, slo))
        out["goodput"] = {"share": good / len(records) if records else 0.0, "requests_per_s": rate(good)}
    cached = [r for r in ok if r.cached_tokens is not None]
    prompt_cached = sum(r.prompt_tokens for r in cached)
    out["prefix_cache_hit_rate"] = (
        sum(r.cached_tokens or 0 for r in cached) / prompt_cached if prompt_cached else None
    )
    return out


def ratio(a: float | None, b: float | None) -> float:
    """a / b, NaN when either side is missing or b is 0."""
    if a is None or b is None or b == 0:
        return math.nan
    return a / b
