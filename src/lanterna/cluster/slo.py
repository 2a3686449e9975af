"""SLO bookkeeping for the virtual cluster: prediction error, per-class SLO attainment, and the achievable bound.

``PredictionTally`` sums the latency predictor's errors over a run (what ``record_latency`` returned).
``ttft_bounds`` is the headroom reference (``cluster.headroom``): for each request of a workload, in arrival order, the TTFT it would
get if every reusable prefix hit (any prefix seen earlier in the run is cached wherever it goes: perfect
affinity with unlimited KV) and it never waited (perfect balance: an idle replica prefills it alone in chunks
of the token budget). No policy can beat it per request, so a policy's P90 TTFT over the bound's P90 says
how much of the achievable it reaches, independent of round-robin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lanterna.bench.metrics import RequestRecord
from lanterna.bench.workloads import WorkItem
from lanterna.cluster.headroom import bounds_for
from lanterna.config.epp import EppConfig
from lanterna.scheduler.predict import Observed


@dataclass(slots=True)
class PredictionTally:
    count: int = 0
    ttft_n: int = 0
    ttft_ape: float = 0.0
    ttft_abs: float = 0.0
    tpot_n: int = 0
    tpot_ape: float = 0.0
    tpot_abs: float = 0.0

    def add(self, seen: Observed | None) -> None:
        if seen is None:
            return
        self.count += 1
        if seen.ttft_s is not None and seen.ttft_ape is not None:
            self.ttft_n += 1
            self.ttft_ape += seen.ttft_ape
            self.ttft_abs += abs(seen.ttft_pred_s - seen.ttft_s)
        if seen.tpot_s is not None and seen.tpot_ape is not None:
            self.tpot_n += 1
            self.tpot_ape += seen.tpot_ape
            self.tpot_abs += abs(seen.tpot_pred_s - seen.tpot_s)

    def summary(self) -> dict[str, Any]:
        return {"samples": self.count,
                "ttft_mape": self.ttft_ape / self.ttft_n if self.ttft_n else None,
                "ttft_mean_abs_error_s": self.ttft_abs / self.ttft_n if self.ttft_n else None,
                "tpot_mape": self.tpot_ape / self.tpot_n if self.tpot_n else None,
                "tpot_mean_abs_error_s": self.tpot_abs / self.tpot_n if self.tpot_n else None}


def ttft_bounds(items: Iterable[WorkItem], profile: str, budget: int = 8192) -> list[float]:
    """Per request (arrival order): best-achievable TTFT, every reusable prefix hit and no wait (see module)."""
    return [b.ttft_s for b in bounds_for(items, profile, budget)]


def slo_attainment(records: Sequence[RequestRecord], slos: dict[str | None, tuple[float | None, float | None]]
                   ) -> dict[str, Any]:
    """Per traffic class: share of requests (rejections count as misses) meeting the class's TTFT and TPOT SLOs."""
    by: dict[str, list[int]] = {}
    for r in records:
        cls = r.traffic_class or "default"
        ttft_slo, tpot_slo = slos.get(r.traffic_class, (None, None))
        ttft, tpot = r.ttft_s, r.tpot_s
        ok = r.error is None and ttft is not None
        if ok and ttft_slo is not None:
            ok = ttft is not None and ttft <= ttft_slo
        if ok and tpot_slo is not None and tpot is not None:
            ok = tpot <= tpot_slo
        tally = by.setdefault(cls, [0, 0, 0])
        tally[0] += 1
        tally[1] += ok
        tally[2] += r.error is not None and r.error.startswith("rejected")
    return {k: {"requests": n, "met": m, "attainment": m / n if n else None, "rejected": rej}
            for k, (n, m, rej) in by.items()}


def with_cluster_timing(cfg: EppConfig, profile: str, budget: int, max_seqs: int = 256) -> EppConfig:
    """Bootstrap every ``predicted-latency-scorer`` that names no profile from the cluster's own engines'
    timing model (profile and token budget), as an operator would point it at the pool's hardware."""
    plugins = []
    changed = False
    for spec in cfg.plugins:
        if spec.type in ("predicted-latency-scorer", "latency-scorer"):
            params = dict(spec.parameters or {})
            if "bootstrapProfile" not in params:
                params["bootstrapProfile"] = profile
                params.setdefault("maxNumBatchedTokens", budget)
                params.setdefault("maxNumSeqs", max_seqs)
                spec = spec.model_copy(update={"parameters": params})
                changed = True
        plugins.append(spec)
    return cfg.model_copy(update={"plugins": plugins}) if changed else cfg
