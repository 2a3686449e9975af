"""What an autoscaler reads and what it answers: plain frozen dataclasses, no I/O, no clocks.

The live loop (``lanterna autoscale``) and the virtual-time cluster both build a ``PoolSnapshot`` from what they
observe (scraped vLLM metrics, gateway counters, replica counts) and hand it to ``Autoscaler.decide``; time comes
in as ``PoolSnapshot.now``. A ``Decision`` holds one target per variant and the reasons, so a published
``wva_desired_replicas`` can always be explained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DEFAULT_VARIANT_COST = 10.0  # WVA's default cost per replica when a variant names none


@dataclass(frozen=True, slots=True)
class Variant:
    """One way to serve the model (GPU type, TP, ...) with its price and capacities.

    Args:
        cost_per_hour: price of one replica; saturation scaling compares it directly (WVA's ``cost``), capacity
            policies compare it per unit of capacity.
        capacity_tokens_per_s: what one replica processes (prompt + output tokens) at its SLO; token-capacity policy.
        max_rate_rps: the highest request rate one replica sustains within the TTFT/ITL targets; model-based policy.
    """

    name: str
    cost_per_hour: float = DEFAULT_VARIANT_COST
    accelerator: str = ""
    min_replicas: int = 0
    max_replicas: int = 64
    capacity_tokens_per_s: float | None = None
    max_rate_rps: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"variant {self.name}: need 0 <= min_replicas <= max_replicas")
        if self.cost_per_hour < 0:
            raise ValueError(f"variant {self.name}: cost_per_hour must be >= 0")


@dataclass(frozen=True, slots=True)
class VariantState:
    """Replica counts of one variant. ``num_starting`` are created but not ready (loading weights): they are
    counted as supply, so a cold start in progress never triggers a second scale-up for the same load."""

    variant: Variant
    num_ready: int
    num_starting: int = 0
    desired: int = 0  # the target last published for it (0: none yet), WVA's "desired from the previous run"

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def num_current(self) -> int:
        return self.num_ready + self.num_starting


@dataclass(frozen=True, slots=True)
class ReplicaMetrics:
    """One ready replica's scraped vLLM gauges (``vllm:kv_cache_usage_perc``, ``vllm:num_requests_waiting``)."""

    replica_id: str
    variant: str
    kv_cache_usage: float
    num_waiting: int
    num_running: int = 0


@dataclass(frozen=True, slots=True)
class Demand:
    """The pool's load over the last observation window (rates are per second over that window).

    Args:
        arrival_rate_rps: requests that reached the gateway.
        prompt_tokens_per_s / output_tokens_per_s: tokens those requests asked for (output: ``max_tokens`` or the
            observed mean), the token-capacity policy's demand.
        num_queued: requests held in the gateway's flow control (not at any replica yet).
        num_in_flight: requests dispatched and not finished.
        processed_tokens_per_s: prompt + generated tokens the replicas actually processed (vLLM's counters);
            zero while work is waiting means the pool is stuck. None: unknown (the stuck guard stays off).
        last_request_at: when the last request arrived (same clock as ``PoolSnapshot.now``); None: never.
    """

    arrival_rate_rps: float = 0.0
    prompt_tokens_per_s: float = 0.0
    output_tokens_per_s: float = 0.0
    num_queued: int = 0
    num_in_flight: int = 0
    processed_tokens_per_s: float | None = None
    last_request_at: float | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.prompt_tokens_per_s + self.output_tokens_per_s

    @property
    def mean_tokens_per_request(self) -> float:
        return self.tokens_per_s / self.arrival_rate_rps if self.arrival_rate_rps > 0 else 0.0

    def idle_for_s(self, now: float) -> float:
        return math.inf if self.last_request_at is None else max(0.0, now - self.last_request_at)


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """Everything one decision may read. ``replicas`` holds ready replicas with fresh metrics only."""

    now: float
    variants: tuple[VariantState, ...]
    replicas: tuple[ReplicaMetrics, ...] = ()
    demand: Demand = field(default_factory=Demand)

    @property
    def num_ready(self) -> int:
        return sum(v.num_ready for v in self.variants)

    @property
    def num_starting(self) -> int:
        return sum(v.num_starting for v in self.variants)

    @property
    def num_current(self) -> int:
        return self.num_ready + self.num_starting

    @property
    def num_waiting(self) -> int:
        """Requests waiting anywhere: the gateway's queue and the replicas' own queues."""
        return self.demand.num_queued + sum(r.num_waiting for r in self.replicas)


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A policy's raw answer: target replicas per variant (absent: keep current) and why."""

    targets: dict[str, int]
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VariantDecision:
    variant: str
    accelerator: str
    current: int  # ready + starting when decided
    recommended: int  # the policy's raw target
    target: int  # after the guards (stuck, scale-to-zero, bounds) and the stabilisation behaviour
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """One target per variant, with reasons. ``target`` is what ``wva_desired_replicas`` publishes."""

    now: float
    variants: tuple[VariantDecision, ...]
    reasons: tuple[str, ...] = ()

    @property
    def targets(self) -> dict[str, int]:
        return {v.variant: v.target for v in self.variants}

    @property
    def total(self) -> int:
        return sum(v.target for v in self.variants)

    def target(self, variant: str) -> int:
        for v in self.variants:
            if v.variant == variant:
                return v.target
        raise KeyError(variant)

    def desired_ratio(self, variant: str) -> float:
        """``wva_desired_ratio``: target / current (target itself when nothing runs, so 0 -> 1 reads as 1.0)."""
        for v in self.variants:
            if v.variant == variant:
                return v.target / v.current if v.current else float(v.target)
        raise KeyError(variant)
