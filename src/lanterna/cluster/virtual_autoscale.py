"""The autoscaler in the virtual cluster's loop: replica lifecycle, demand measurement and actuation.

Why here and not in the policy: the optimizers (``lanterna.autoscale``) are pure; this driver plays the part the
live loop plays in production. Every ``interval_s`` of virtual time it builds a ``PoolSnapshot`` from what the
gateway would see (scraped metrics of ready replicas, arrivals and tokens since the last tick, the flow-control
queue, prompt + generated tokens counted by the engines) and actuates ``Autoscaler.decide``:

- scale up:   a new replica is STARTING for ``cold_start_s`` (GPU paid, not routable), then READY (routable,
              scraped, its KV events indexed); the first ready replica releases requests held at zero replicas;
- scale down: a STARTING replica is cancelled first (nothing to lose), else the READY replica with the least
              in-flight work goes DRAINING: no new requests, its in-flight ones finish, then it is STOPPED.
              Nothing is dropped by a scale-down.

Replica-seconds run from creation (weights start loading) to stop, the way a GPU is billed.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from lanterna.autoscale import (
    Autoscaler,
    AutoscalerConfig,
    Demand,
    FixedPolicy,
    LatencyTargets,
    ModelBasedPolicy,
    Policy,
    PoolSnapshot,
    ReplicaMetrics,
    SaturationConfig,
    SaturationPolicy,
    ScaleToZero,
    ScalingBehavior,
    ServingLimits,
    TokenCapacityPolicy,
    Variant,
    VariantState,
    WorkloadShape,
    max_sustainable_rate,
)
from lanterna.bench.config import (
    BenchConfig,
    MultiTurnWorkload,
    RandomWorkload,
    SharedPrefixWorkload,
    TraceWorkload,
    VirtualAutoscale,
)
from lanterna.bench.workloads import WorkItem
from lanterna.sim import get_profile, make_timer

if TYPE_CHECKING:
    from lanterna.cluster.virtual import VirtualCluster

STARTING, READY, DRAINING, STOPPED = 0, 1, 2, 3


def workload_shape(cfg: BenchConfig, a: VirtualAutoscale) -> WorkloadShape:
    """The mean request the sizing policies plan for: configured, else derived from the workload."""
    w = cfg.workload
    n_in, n_out, cached = 1000.0, 1000.0, 0.0
    if isinstance(w, RandomWorkload):
        n_in, n_out = float(w.input_len), float(w.output_len)
    elif isinstance(w, SharedPrefixWorkload):
        n_in, n_out = float(w.system_len + w.question_len), float(w.output_len)
        cached = w.system_len / n_in
    elif isinstance(w, MultiTurnWorkload):
        r = w.num_rounds
        n_in = w.system_len + w.question_len * (r + 1) / 2 + w.output_len * (r - 1) / 2
        n_out, cached = float(w.output_len), max(0.0, 1 - w.question_len / n_in)
    elif isinstance(w, TraceWorkload):
        n_in, n_out, cached = _trace_shape(w)
    return WorkloadShape(a.prompt_tokens or n_in, a.output_tokens or n_out,
                         cached if a.cached_fraction is None else a.cached_fraction)


def _trace_shape(w: TraceWorkload) -> tuple[float, float, float]:
    """Mean input/output lengths of a Mooncake trace, and the share of hash blocks seen before (prefix hits)."""
    seen: set[int] = set()
    n = tin = tout = blocks = hits = 0
    with w.path.open() as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            n += 1
            tin += int(row["input_length"])
            tout += int(row["output_length"])
            for h in row.get("hash_ids", []):
                blocks += 1
                hits += h in seen
                seen.add(h)
            if w.max_requests is not None and n >= w.max_requests:
                break
    return (tin / n, tout / n, hits / blocks if blocks else 0.0) if n else (1000.0, 1000.0, 0.0)


class AutoscaleDriver:
    def __init__(self, vc: VirtualCluster, cfg: VirtualAutoscale) -> None:
        self.vc, self.cfg = vc, cfg
        c = vc.c
        self.interval_s = cfg.interval_s
        prof = get_profile(c.profile)
        self.gpus_per_replica = prof.tp
        weights = prof.weight_bytes * prof.tp
        self.cold_start_s = (cfg.cold_start_s if cfg.cold_start_s is not None
                             else cfg.startup_overhead_s + weights / cfg.storage_bandwidth_bps)
        self.shape = workload_shape(vc.cfg, cfg)
        blocks = c.num_gpu_blocks or prof.num_gpu_blocks(c.block_size)
        limits = ServingLimits(blocks * c.block_size, c.max_num_seqs, c.max_num_batched_tokens)
        self.operating_point = max_sustainable_rate(make_timer("physics", c.profile), self.shape, limits,
                                                    LatencyTargets(cfg.ttft_s, cfg.itl_s))
        rate = self.operating_point.rate_rps
        self.variant = Variant(c.profile, cfg.cost_per_hour, c.profile, cfg.min_replicas, cfg.max_replicas,
                               capacity_tokens_per_s=rate * (self.shape.prompt_tokens + self.shape.output_tokens),
                               max_rate_rps=rate)
        self.initial_replicas = c.replicas if cfg.initial_replicas is None else cfg.initial_replicas
        policy: Policy
        if cfg.policy == "fixed":
            policy = FixedPolicy(self.initial_replicas)
        elif cfg.policy == "saturation":
            policy = SaturationPolicy(SaturationConfig(cfg.kv_cache_threshold, cfg.queue_length_threshold,
                                                       cfg.kv_spare_trigger, cfg.queue_spare_trigger))
        elif cfg.policy == "token-capacity":
            policy = TokenCapacityPolicy(cfg.utilization, drain_s=cfg.interval_s * 2)
        else:
            policy = ModelBasedPolicy(cfg.headroom, drain_s=cfg.interval_s * 2)
        behavior = ScalingBehavior(cfg.scale_up_window_s, cfg.scale_down_window_s, cfg.period_s, cfg.scale_up_pods,
                                   100.0, cfg.scale_down_pods, cfg.scale_down_delay_after_up_s)
        self.scaler = Autoscaler(policy, AutoscalerConfig(behavior, ScaleToZero(cfg.scale_to_zero, cfg.retention_s)))
        self.state: list[int] = []
        self.created: list[float] = []
        self.stopped: list[float | None] = []
        self._processed: list[int] = []
        self._last_tick = 0.0
        self._arrivals = self._prompt_tokens = self._output_tokens = 0
        self._last_request_at: float | None = None
        self.desired = 0
        self.num_scale_ups = self.num_scale_downs = 0
        self.timeline: list[list[float]] = []  # [t, ready, starting, draining, queued, in_flight, rps, target]
        self.reasons: list[tuple[float, str]] = []  # decisions that changed the target (bounded)

    # -- events from the cluster -------------------------------------------------------------------------------
    def on_arrival(self, item: WorkItem, t: float) -> None:
        self._arrivals += 1
        self._prompt_tokens += item.num_prompt_tokens
        self._output_tokens += item.output_len
        self._last_request_at = t

    def on_ready(self, i: int, t: float) -> None:
        if self.state[i] != STARTING:  # cancelled while loading
            return
        self.state[i] = READY
        self.vc._route(i)
        self.vc.all_endpoints[i].metrics.scraped_at = t  # an empty replica: its zero metrics are fresh
        flow = self.vc.flow
        if flow is not None and flow.held:
            flow.held = False
            self.vc._settle(flow.dispatch(), t)

    def on_idle(self, i: int, t: float) -> None:
        if self.state[i] == DRAINING:
            self._stop(i, t)

    # -- the decision ------------------------------------------------------------------------------------------
    def _sync(self) -> None:
        while len(self.state) < len(self.vc.engines):  # replicas created ready at t = 0 by the cluster
            self.state.append(READY)
            self.created.append(0.0)
            self.stopped.append(None)
            self._processed.append(0)

    def tick(self, t: float) -> None:
        self._sync()
        # the window since the last tick; never shorter than the interval (the first tick fires at the first
        # arrival, t - 0 would turn one request into an enormous rate)
        vc, window = self.vc, max(t - self._last_tick, self.interval_s)
        processed = 0
        for i, st in enumerate(self.state):
            if st == READY or st == DRAINING:
                s = vc.engines[i].stats()
                cur = int(getattr(s, "num_prompt_tokens", 0)) + int(getattr(s, "num_generation_tokens", 0))
                processed += cur - self._processed[i]
                self._processed[i] = cur
        ready = [i for i, st in enumerate(self.state) if st == READY]
        starting = sum(1 for st in self.state if st == STARTING)
        reps = tuple(ReplicaMetrics(vc.all_endpoints[i].id, self.variant.name, vc.all_endpoints[i].metrics.kv_cache_usage,
                                    vc.all_endpoints[i].metrics.num_waiting, vc.all_endpoints[i].metrics.num_running)
                     for i in ready)
        queued = vc.flow.num_queued if vc.flow is not None else 0
        demand = Demand(self._arrivals / window, self._prompt_tokens / window, self._output_tokens / window, queued,
                        len(vc._flights), processed / window, self._last_request_at)
        snap = PoolSnapshot(t, (VariantState(self.variant, len(ready), starting, self.desired),), reps, demand)
        d = self.scaler.decide(snap)
        target = d.total
        if target != len(ready) + starting and len(self.reasons) < 10_000:
            self.reasons.append((t, "; ".join(d.reasons) + f" | {d.variants[0].reason}"))
        self._actuate(target, ready, t)
        self.desired = target
        self.timeline.append([t, len(ready), starting, sum(1 for st in self.state if st == DRAINING), queued,
                              len(vc._flights), round(demand.arrival_rate_rps, 3), target])
        self._last_tick = t
        self._arrivals = self._prompt_tokens = self._output_tokens = 0

    def _actuate(self, target: int, ready: list[int], t: float) -> None:
        from lanterna.cluster.virtual import _READY

        vc = self.vc
        starting = [i for i, st in enumerate(self.state) if st == STARTING]
        current = len(ready) + len(starting)
        if target > current:
            self.num_scale_ups += 1
            for _ in range(target - current):
                i = vc._add_replica()
                self.state.append(STARTING)
                self.created.append(t)
                self.stopped.append(None)
                self._processed.append(0)
                vc._push(t + self.cold_start_s, _READY, i)
        elif target < current:
            self.num_scale_downs += 1
            n = current - target
            for i in reversed(starting):  # the newest cold starts first: they hold no work
                if n == 0:
                    break
                self._stop(i, t)
                n -= 1
            load = sorted(ready, key=lambda i: (vc.all_endpoints[i].load.in_flight_requests, -i))
            for i in load[:n]:
                self.state[i] = DRAINING
                vc._unroute(i)
                if not vc._busy[i] and not vc.engines[i].has_work():
                    self._stop(i, t)
            if not vc.endpoints and vc.flow is not None:
                vc.flow.held = True  # zero replicas: arrivals wait in the queue for the next cold start

    def _stop(self, i: int, t: float) -> None:
        was = self.state[i]
        self.state[i] = STOPPED
        self.stopped[i] = t
        ep = self.vc.all_endpoints[i]
        ep.healthy = False
        if was != STARTING:
            self.vc.applier.remove_endpoint(ep.id)

    # -- results -----------------------------------------------------------------------------------------------
    def summary(self, t_end: float) -> dict[str, Any]:
        self._sync()
        secs = sum((s if s is not None else t_end) - c for c, s in zip(self.created, self.stopped, strict=True))
        return {
            "policy": self.cfg.policy, "interval_s": self.interval_s, "cold_start_s": self.cold_start_s,
            "replica_seconds": secs, "replica_hours": secs / 3600,
            "gpu_hours": secs * self.gpus_per_replica / 3600, "cost": secs / 3600 * self.cfg.cost_per_hour,
            "max_rate_rps_per_replica": self.operating_point.rate_rps,
            "shape": {"prompt_tokens": self.shape.prompt_tokens, "output_tokens": self.shape.output_tokens,
                      "cached_fraction": self.shape.cached_fraction},
            "num_replicas_created": len(self.state), "num_scale_ups": self.num_scale_ups,
            "num_scale_downs": self.num_scale_downs,
            "max_replicas_seen": max((r[1] + r[2] + r[3] for r in self.timeline), default=0),
            "timeline_columns": ["t", "ready", "starting", "draining", "queued", "in_flight", "arrival_rps", "target"],
            "timeline": self.timeline, "changes": self.reasons[:2000],
            "end_s": t_end if math.isfinite(t_end) else None,
        }
