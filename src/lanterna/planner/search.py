"""Sizing search (pure): the fewest GPUs whose simulated latency meets an SLO at a target load.

The caller supplies ``evaluate(candidate) -> Outcome`` (the CLI runs the virtual cluster); this module only
decides which candidates to try and reads the answers. Per (TP, EP mode, P/D split, CPU offload) shape, the
replica count is searched coarse-then-fine: 1, 2, 4, ... until the SLO holds, then bisection between the last
failure and the first success. That relies on latency falling as replicas are added at a fixed load (true of a
work-conserving router; the first success is kept even if a larger count would, by noise, fail), and costs
about ``2 log2(R)`` simulations per shape instead of ``R``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Slo:
    """Seconds; None = no bound."""

    ttft_p90_s: float | None = None
    tpot_p90_s: float | None = None

    @classmethod
    def parse(cls, text: str) -> Slo:
        """``ttft_p90=2,tpot_p90=50ms`` (seconds unless suffixed ``ms``)."""
        vals: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, raw = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in ("ttft_p90", "tpot_p90"):
                raise ValueError(f"bad SLO term {part!r}: expected ttft_p90=SECONDS or tpot_p90=SECONDS")
            raw = raw.strip().lower()
            vals[key] = float(raw[:-2]) / 1000 if raw.endswith("ms") else float(raw.removesuffix("s"))
            if vals[key] <= 0:
                raise ValueError(f"SLO {key} must be positive")
        if not vals:
            raise ValueError("empty SLO")
        return cls(vals.get("ttft_p90"), vals.get("tpot_p90"))

    def met(self, ttft_p90_s: float | None, tpot_p90_s: float | None) -> bool:
        if self.ttft_p90_s is not None and (ttft_p90_s is None or ttft_p90_s > self.ttft_p90_s):
            return False
        return not (self.tpot_p90_s is not None and (tpot_p90_s is None or tpot_p90_s > self.tpot_p90_s))


@dataclass(frozen=True, slots=True, order=True)
class Shape:
    """Everything about a deployment but its replica count. ``ep``: wide expert parallelism, one data-parallel
    attention rank per replica (EP size = replicas x TP). ``prefill_share``: the share of replicas serving
    prefill in a P/D split (0 = aggregated)."""

    tp: int = 1
    ep: bool = False
    prefill_share: float = 0.0
    cpu_offload_gib: float = 0.0

    def label(self) -> str:
        parts = [f"TP{self.tp}"]
        if self.ep:
            parts.append("wide-EP")
        if self.prefill_share:
            parts.append(f"P/D {self.prefill_share:.0%} prefill")
        if self.cpu_offload_gib:
            parts.append(f"+{self.cpu_offload_gib:g} GiB CPU KV")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Candidate:
    shape: Shape
    replicas: int

    @property
    def num_gpus(self) -> int:
        return self.replicas * self.shape.tp


@dataclass(frozen=True, slots=True)
class Outcome:
    candidate: Candidate
    feasible: bool  # the model fits in memory at this shape
    ttft_p90_s: float | None = None
    tpot_p90_s: float | None = None
    output_tokens_per_s: float = 0.0
    num_failed: int = 0
    meets_slo: bool = False
    note: str = ""

    @property
    def tokens_per_s_per_gpu(self) -> float:
        return self.output_tokens_per_s / self.candidate.num_gpus


@dataclass(slots=True)
class SearchResult:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def best(self) -> Outcome | None:
        """Fewest GPUs meeting the SLO; ties go to the higher throughput per GPU, then the lower TTFT."""
        ok = [o for o in self.outcomes if o.meets_slo]
        if not ok:
            return None
        return min(ok, key=lambda o: (o.candidate.num_gpus, -o.tokens_per_s_per_gpu, o.ttft_p90_s or 0.0))

    def pareto(self, latency: Callable[[Outcome], float | None]) -> list[Outcome]:
        """Outcomes no other beats on both throughput per GPU (higher) and ``latency`` (lower), by latency."""
        pts = [(lat, o) for o in self.outcomes if o.feasible and (lat := latency(o)) is not None]
        pts.sort(key=lambda p: (p[0], -p[1].tokens_per_s_per_gpu))
        front, best_tput = [], -1.0
        for _, o in pts:
            if o.tokens_per_s_per_gpu > best_tput:
                front.append(o)
                best_tput = o.tokens_per_s_per_gpu
        return front


def search(shapes: Iterable[Shape], evaluate: Callable[[Candidate], Outcome], *, max_replicas: int = 64,
           max_gpus: int | None = None, explore_above: int = 0) -> SearchResult:
    """Minimal replicas per shape (doubling, then bisection); every simulated candidate is kept.
    ``explore_above``: also simulate that many larger counts (x1.5, x2...) to draw the latency/cost trade-off."""
    res = SearchResult()
    for shape in shapes:
        seen: dict[int, Outcome] = {}

        def run(r: int, shape: Shape = shape, seen: dict[int, Outcome] = seen) -> Outcome:
            if r not in seen:
                seen[r] = evaluate(Candidate(shape, r))
                res.outcomes.append(seen[r])
            return seen[r]

        lo, hi, r = 0, None, 1  # lo: largest count known to fail; hi: smallest known to pass
        while r <= max_replicas and (max_gpus is None or r * shape.tp <= max_gpus):
            if run(r).meets_slo:
                hi = r
                break
            lo, r = r, r * 2
        if hi is None:
            continue
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if run(mid).meets_slo:
                hi = mid
            else:
                lo = mid
        for k in range(1, explore_above + 1):
            r = max(hi + 1, round(hi * (1 + k / 2)))
            if r <= max_replicas and (max_gpus is None or r * shape.tp <= max_gpus):
                run(r)
    return res
