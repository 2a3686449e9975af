"""The virtual-time cluster: N simulated engines + the real scheduler, KV index and gateway load accounting
in one process, on a simulated clock.

Why: a routing policy is judged by the same code that serves production (``Scheduler``, ``KVIndex``
fed by the engines' own KV events, ``LoadTicket``), in seconds of CPU instead of hours of GPU. It is a
discrete-event simulation over a heap of (time, seq, kind, ...) events:

- arrival:   build the ``SchedRequest`` (token ids for precise routing, per-segment text for the
             approximate index), ``schedule`` -> ``pre_request`` -> ``LoadTicket`` -> ``Engine.add_request``;
             an idle engine starts a step at once;
- step done: the step's KV events go into the index (vLLM publishes after the step), its tokens into
             the request records; first token releases prefill load, finish releases the rest and calls
             ``response_complete``; an engine with work starts its next step at the same instant;
- scrape:    every ``scrape_interval_s`` copy ``Engine.stats()`` into ``Endpoint.metrics``, so policies
             see metrics exactly as stale as the real scraper leaves them;
- expiry:    a request's queue TTL (flow control only);
- ready/tick: with ``cluster.autoscale``, a replica finishing its cold start, and the autoscaler's periodic
             decision (``cluster.virtual_autoscale``): replicas come and go at runtime, a removed one drains first.

With ``cluster.flow_control`` an arrival first passes the gateway's flow control (``FlowCore``: priority bands,
fairness, queue TTL, shedding), which is told "saturated" by the gateway's rule (``pool_saturated``) over the
scraped metrics. Dropped requests stay in the results as failures ``rejected_<reason>``; a request's TTFT
includes its time in the queue, as a client would see it.

Same config + same seed -> the same event order -> the same numbers (sequence numbers break time ties).
"""

from __future__ import annotations

import bisect
import gc
import heapq
import itertools
import math
import random
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, cast

from lanterna.bench.config import BenchConfig, ClusterTarget, TrafficClass
from lanterna.bench.load import StagePlan, arrival_offsets, arrival_rng
from lanterna.bench.metrics import RequestRecord, StageSummary, summarize
from lanterna.bench.progress import StageProgress
from lanterna.bench.report import RunResult, StageResult, now_utc
from lanterna.bench.stages import StageDriver
from lanterna.bench.workloads import WorkItem, iter_workload
from lanterna.clock import VirtualClock
from lanterna.cluster.headroom import HeadroomModel, RequestBound, stage_headroom
from lanterna.cluster.lora import AdapterMix, engine_lora_kwargs, lora_summary, scrape_lora
from lanterna.cluster.policies import resolve_policy
from lanterna.cluster.slo import PredictionTally, with_cluster_timing
from lanterna.cluster.tiers import STORAGE_MOUNT, engine_tier_kwargs, make_shared_storage
from lanterna.endpoints.types import Endpoint
from lanterna.errors import NoCapacity, RateLimited
from lanterna.flowcontrol import (
    DEFAULT_FAIRNESS_ID,
    EntryState,
    FlowConfig,
    FlowCore,
    FlowEntry,
    FlowRequest,
    pool_saturated,
)
from lanterna.kvindex.apply import EventApplier
from lanterna.kvindex.index import KVIndex
from lanterna.routing.accounting import LoadTicket
from lanterna.scheduler import SchedRequest, Scheduler, SchedulerServices, SchedulingResult
from lanterna.scheduler.predict import record_latency
from lanterna.sim.profiles import PROFILES, get_profile
from lanterna.sim.tiers import KVTier
from lanterna.sim.types import EngineRequest, StepOutput

_STEP, _ARRIVE, _SCRAPE, _EXPIRE, _READY, _TICK, _ADMIT = 0, 1, 2, 3, 4, 5, 6
MIN_STEP_S = 1e-4  # an engine that reports a zero-length step still moves time forward
REJECT_S = 1e-3  # a rejected closed-loop client sends its next request after one gateway round trip
_QUEUED, _GRANTED = EntryState.QUEUED, EntryState.GRANTED


class EngineLike(Protocol):
    def add_request(self, req: EngineRequest) -> None: ...
    def has_work(self) -> bool: ...
    def step(self, now: float) -> StepOutput: ...
    def stats(self) -> Any: ...


def make_engine(c: ClusterTarget, seed: int, storage: KVTier | None = None) -> EngineLike:
    """A simulated vLLM engine for ``c.profile`` with the physics step timer and ``c.tiers``;
    ``storage``: the cluster's shared storage tier (``cluster.tiers.make_shared_storage``)."""
    from lanterna.sim import Engine, EngineConfig, get_profile, make_timer

    p = get_profile(c.profile)
    blocks = c.num_gpu_blocks or p.num_gpu_blocks(c.block_size)
    cfg = EngineConfig(block_size=c.block_size, num_gpu_blocks=blocks, max_num_seqs=c.max_num_seqs,
                       max_num_batched_tokens=c.max_num_batched_tokens, max_model_len=1 << 20,
                       compact_outputs=True, kv_bytes_per_token=p.kv_bytes_per_token, **engine_tier_kwargs(c),
                       **engine_lora_kwargs(c))
    return Engine(cfg, make_timer("physics", c.profile), seed=seed, storage=storage)


@dataclass(slots=True)
class _Flight:
    rec: RequestRecord
    req: SchedRequest
    result: SchedulingResult
    ticket: LoadTicket
    engine: int
    entry: FlowEntry | None


@dataclass(slots=True)
class _Chained:
    """An arrival that schedules the next one of its stage when it fires."""

    item: WorkItem
    chain: Any


class VirtualCluster:
    def __init__(self, cfg: BenchConfig, engine_factory: Any = make_engine, *, progress: bool = False) -> None:
        assert cfg.cluster is not None
        self.cfg, self.c = cfg, cfg.cluster
        self.clock = VirtualClock()
        self.index = KVIndex()
        self.applier = EventApplier(self.index)
        self._engine_factory = engine_factory
        # Replicas by creation index (grow-only); ``endpoints`` is the routable subset the scheduler sees and
        # ``_scraped`` the indexes whose metrics are copied (ready ones; all of them without autoscaling).
        self.all_endpoints: list[Endpoint] = []
        self.engines: list[EngineLike] = []
        self._busy: list[bool] = []
        # host work a scrape costs a busy replica (its API server renders /metrics on the engine's core): owed
        # by the replica's next step (the profile's ``host_scrape_s``; 0 on GPU servers)
        prof = get_profile(self.c.profile) if self.c.profile in PROFILES else None
        self._scrape_s = prof.host_scrape_s if prof is not None else 0.0
        # transit between the routing decision and the engine (the gateway's hops; the profile's host_latency_s)
        self._hop_s = prof.host_latency_s if prof is not None else 0.0
        # ... and, on a host whose API server shares the engine's core, the request's own host work (HTTP,
        # gateway, client: ``host_request_s``) runs beside a busy engine at half speed: the step pays its CPU
        # once (timing.py), the request's transit waits the other half (0 on GPU servers)
        self._busy_hop_s = prof.host_request_s if prof is not None else 0.0
        self._host_debt: list[float] = []
        # step-time scatter of the host (the profile's ``step_cv``; 0 = every step exactly as the model says)
        cv = prof.step_cv if prof is not None else 0.0
        self._jitter_sigma = math.sqrt(math.log1p(cv * cv))
        self._jitter_mu = -self._jitter_sigma**2 / 2  # so the factor's mean is 1
        self._jitter_rng = random.Random((cfg.seed if self.c.scatter_seed is None else self.c.scatter_seed) + 4)
        self._index_of: dict[str, int] = {}
        self.endpoints: list[Endpoint] = []
        self._scraped: list[int] = []
        self.storage = make_shared_storage(self.c)  # one tier every engine shares, or None
        self._mount = STORAGE_MOUNT if self.storage is not None else None
        self.index.set_block_size(self.c.model, self.c.block_size)
        self.autoscaler: Any = None
        initial = self.c.replicas
        if self.c.autoscale is not None:
            from lanterna.cluster.virtual_autoscale import AutoscaleDriver

            self.autoscaler = AutoscaleDriver(self, self.c.autoscale)
            initial = self.autoscaler.initial_replicas
        for _ in range(initial):
            self._route(self._add_replica())
        policy = with_cluster_timing(resolve_policy(self.c.policy), self.c.profile, self.c.max_num_batched_tokens,
                                     self.c.max_num_seqs)
        self.sched = Scheduler.from_config(policy, rng=random.Random(cfg.seed),
                                           clock=self.clock, services=SchedulerServices(kv_index=self.index))
        self.items: Iterator[WorkItem] = iter_workload(cfg.workload, cfg.seed)
        self.load_rng = arrival_rng(cfg.seed)
        self._heap: list[tuple[float, int, int, Any, Any]] = []
        self._seq = itertools.count()
        self._ids = itertools.count()
        self._flights: dict[str, _Flight] = {}
        self._text: OrderedDict[str, str] = OrderedDict()
        self._scrape_armed = False
        self._stage_records: list[RequestRecord] = []
        self._stage_bounds: list[RequestBound] = []  # parallel to _stage_records: what no policy can beat
        self.bound_model = HeadroomModel(self.c.profile, self.c.max_num_batched_tokens, self.c.max_num_seqs)
        self._closed_loop: Any = None
        self.routed = Counter[str]()
        self.progress = StageProgress(enabled=progress)
        self._bar: Any = None
        self.num_events = 0
        self.flow: FlowCore | None = None
        self._saturated = False
        self._stale_expiries = 0  # TTL events in the heap whose entry already left the queue
        self._req_class: dict[str, TrafficClass] = {}  # request id -> its class, until it is dispatched
        self.prediction = PredictionTally()
        fc = self.c.flow_control
        if fc is None and self.autoscaler is not None:
            from lanterna.bench.config import VirtualFlowControl

            fc = VirtualFlowControl.model_validate({})  # at zero replicas requests must wait somewhere: the gateway's queue
        self._classes = fc.classes if fc is not None else []
        self._class_weights = list(itertools.accumulate(k.weight for k in self._classes))
        self._class_rng = random.Random(cfg.seed + 2)
        self.adapters = AdapterMix(self.c.lora, cfg.seed + 3) if self.c.lora is not None else None
        self.lora_placements: dict[str, set[str]] = {}  # adapter -> endpoints it was sent to
        if fc is not None and fc.enabled:
            self.flow = FlowCore(FlowConfig(max_concurrency=fc.max_concurrency, max_queue_len=fc.max_queue_len,
                                            queue_ttl_s=fc.queue_ttl_s,
                                            max_queue_len_per_flow=fc.max_queue_len_per_flow,
                                            ordering=fc.ordering),
                                 self.clock, self._is_saturated)
            self.flow.held = not self.endpoints
        self._tick_armed = self.autoscaler is None  # True: nothing to arm
        self._tick_in_heap = 0  # the autoscaler's tick event waiting in the heap (0 or 1)

    # -- replicas ----------------------------------------------------------------------------------------------
    def _add_replica(self) -> int:
        """Create replica i (engine + endpoint), not yet routable."""
        i = len(self.engines)
        addr = f"10.0.{i // 250}.{i % 250 + 1}:8000"
        ep = Endpoint(id=addr, address=addr, models=frozenset({self.c.model}))
        self.all_endpoints.append(ep)
        storage = (self.storage,) if self.storage is not None else ()
        self.engines.append(self._engine_factory(self.c, self.cfg.seed * 1000 + i, *storage))
        self._busy.append(False)
        self._host_debt.append(0.0)
        self._index_of[ep.id] = i
        return i

    def _route(self, i: int) -> None:
        """Replica i is ready: index its KV events, scrape it, let the scheduler pick it."""
        ep = self.all_endpoints[i]
        self.applier.add_endpoint(ep.id, self.c.model, storage=self._mount)
        self.endpoints.append(ep)
        self._scraped.append(i)

    def _unroute(self, i: int) -> None:
        """No new requests for replica i (draining); its in-flight ones finish."""
        ep = self.all_endpoints[i]
        self.endpoints.remove(ep)
        self._scraped.remove(i)

    # -- event plumbing ----------------------------------------------------------------------------
    def _push(self, t: float, kind: int, a: Any = None, b: Any = None) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), kind, a, b))
        if not self._scrape_armed:
            self._scrape_armed = True
            heapq.heappush(self._heap, (t, next(self._seq), _SCRAPE, None, None))
        if not self._tick_armed:
            self._tick_armed, self._tick_in_heap = True, 1
            heapq.heappush(self._heap, (t, next(self._seq), _TICK, None, None))

    def _drain(self, on_done: Any = None) -> None:
        heap, clock, scaler = self._heap, self.clock, self.autoscaler
        while heap:
            t, _, kind, a, b = heapq.heappop(heap)
            if kind == _EXPIRE:
                if a.state is not _QUEUED:  # granted or evicted meanwhile: a dead timer, not an event
                    self._stale_expiries -= 1
                    continue
                clock.set(t)
                self.num_events += 1
                self._expire(a, t)
                continue
            clock.set(t)
            self.num_events += 1
            if kind == _STEP:
                self._step_done(a, b, t, on_done)
            elif kind == _ARRIVE:
                if type(a) is _Chained:
                    a.chain(t)
                    a = a.item
                self._arrive(a, b, t)
            elif kind == _SCRAPE:
                self._scrape(t)
                # periodic events re-arm only while something else is pending (dead TTL timers and the
                # autoscaler's tick do not count), so the run ends when the work does
                if len(heap) > self._stale_expiries + self._tick_in_heap:
                    heapq.heappush(heap, (t + self.c.scrape_interval_s, next(self._seq), _SCRAPE, None, None))
                else:
                    self._scrape_armed = False
            elif kind == _ADMIT:
                self._admit(a, b, t)
            elif kind == _TICK:
                scaler.tick(t)
                if len(heap) > self._stale_expiries + self._scrape_armed:
                    heapq.heappush(heap, (t + scaler.interval_s, next(self._seq), _TICK, None, None))
                else:
                    self._tick_armed, self._tick_in_heap = False, 0
            else:
                scaler.on_ready(a, t)

    def _scrape(self, t: float) -> None:
        eps, engines = self.all_endpoints, self.engines
        for i in self._scraped:
            s, m = engines[i].stats(), eps[i].metrics
            m.num_running, m.num_waiting, m.kv_cache_usage = s.num_running, s.num_waiting, s.kv_cache_usage
            m.block_size, m.num_gpu_blocks = s.block_size, s.num_gpu_blocks
            m.prefix_cache_queries, m.prefix_cache_hits = float(s.prefix_cache_queries), float(s.prefix_cache_hits)
            if self.adapters is not None:
                scrape_lora(m, s)
            m.scraped_at = t
            if self._scrape_s and self._busy[i]:
                self._host_debt[i] += self._scrape_s
        flow = self.flow
        if flow is not None:
            # the gateway recomputes its cached flag on each scrape and pokes the queue when it clears
            self._saturated = pool_saturated(self.endpoints, t, math.inf)
            if flow.blocked_by_saturation:
                self._settle(flow.dispatch(), t)

    def _is_saturated(self) -> bool:
        return self._saturated

    # -- requests ----------------------------------------------------------------------------------
    def _segment_text(self, item: WorkItem) -> str:
        """4 characters per token (latin-1 of int32), rendered once per segment: equal prefixes, equal text."""
        parts = []
        for seg in item.segments:
            s = self._text.get(seg.key)
            if s is None:
                s = seg.tokens.astype("<i4").tobytes().decode("latin-1")
                self._text[seg.key] = s
                if len(self._text) > 4096:
                    self._text.popitem(last=False)
            parts.append(s)
        return "".join(parts)

    def _arrive(self, item: WorkItem, stage: int, t: float) -> None:
        rid = f"v{next(self._ids)}"
        rec = RequestRecord(rid, stage, t, t, prompt_tokens=item.num_prompt_tokens, group=item.group)
        if self.autoscaler is not None:
            self.autoscaler.on_arrival(item, t)
        self._stage_records.append(rec)
        self._stage_bounds.append(self.bound_model.add(item))
        flow = self.flow
        if flow is None:
            self._dispatch(rec, item, None, t)
            return
        fid, prio, deadline = DEFAULT_FAIRNESS_ID, 0, None
        if self._classes:
            k = self._classes[bisect.bisect_right(self._class_weights,
                                                  self._class_rng.random() * self._class_weights[-1])]
            fid, prio = k.name, k.priority
            rec.traffic_class = k.name
            self._req_class[rid] = k
            if k.slo_ttft_ms is not None:
                deadline = t + k.slo_ttft_ms / 1e3
        entry, changed = flow.admit(FlowRequest(rid, fairness_id=fid, priority=prio, model=self.c.model,
                                                slo_deadline=deadline))
        entry.waiter = (rec, item)
        if changed:
            self._settle(changed, t)
        state = entry.state
        if state is _GRANTED:
            if not self._dispatch(rec, item, entry, t):
                self._settle(flow.release(entry), t)
        elif state is _QUEUED:
            self._push(entry.deadline, _EXPIRE, entry)
        else:
            self._reject(rec, entry, t)

    def _settle(self, changed: Sequence[FlowEntry], t: float) -> None:
        """Start the queued entries flow control granted, fail the ones it evicted. A worklist, not recursion:
        a start that finds no endpoint frees its slot, which may grant the next."""
        flow = self.flow
        assert flow is not None
        work = deque(changed)
        while work:
            entry = work.popleft()
            self._stale_expiries += 1  # it left the queue: its TTL event is dead
            rec, item = cast(tuple[RequestRecord, WorkItem], entry.waiter)
            if entry.state is _GRANTED:
                if not self._dispatch(rec, item, entry, t):
                    work.extend(flow.release(entry))
            else:
                self._reject(rec, entry, t)

    def _reject(self, rec: RequestRecord, entry: FlowEntry, t: float) -> None:
        """What the gateway answers 429 / 503: a failure by reason, never a silent loss."""
        reason = entry.drop_reason
        self._req_class.pop(rec.request_id, None)
        rec.error = f"rejected_{reason.value if reason is not None else 'saturated'}"
        self._on_finished(t, rejected=True)

    def _expire(self, entry: FlowEntry, t: float) -> None:
        assert self.flow is not None
        if self.flow.expire(entry):
            self._reject(entry.waiter[0], entry, t)  # type: ignore[index]

    def _dispatch(self, rec: RequestRecord, item: WorkItem, entry: FlowEntry | None, t: float) -> bool:
        """Schedule and start one request; False when no endpoint could take it (recorded as a failure)."""
        got = self._schedule(rec, item, entry, t)
        if got is None:
            return False
        i, fl, tokens = got
        req = EngineRequest(rec.request_id, tokens, item.output_len, arrival_time=t, lora_name=fl.req.lora)
        hop = self._hop_s + self._busy_hop_s if self._busy[i] else self._hop_s
        if hop:
            self._push(t + hop, _ADMIT, i, req)
        else:
            self._admit(i, req, t)
        return True

    def _schedule(self, rec: RequestRecord, item: WorkItem, entry: FlowEntry | None, t: float
                  ) -> tuple[int, _Flight, list[int]] | None:
        """Pick the endpoint for one request and register its flight (the engine admission is the caller's);
        None when no endpoint could take it (recorded as a failure). The one scheduling path every cluster
        variant shares."""
        rid = rec.request_id
        tokens = item.token_ids()
        lora = self.adapters.pick(item) if self.adapters is not None else None
        k = self._req_class.pop(rid, None)
        req = SchedRequest(request_id=rid, model=self.c.model, prompt_text=self._segment_text(item),
                           token_ids=tokens if self.c.precise_tokens else None, max_tokens=item.output_len,
                           session_token=item.session, lora=lora, received_at=rec.scheduled_s)
        if k is not None:
            req.priority = k.priority
            req.slo_ttft_s = k.slo_ttft_ms / 1e3 if k.slo_ttft_ms is not None else None
            req.slo_tpot_s = k.slo_tpot_ms / 1e3 if k.slo_tpot_ms is not None else None
        try:
            result = self.sched.schedule(req, self.endpoints)
        except NoCapacity:
            rec.error = "no_capacity"
            self._on_finished(t)
            return None
        except RateLimited:  # predicted to miss its SLO everywhere and sheddable: the gateway's 429
            rec.error = "rejected_slo_shed"
            self._on_finished(t, rejected=True)
            return None
        ep = result.targets[0]
        i = self._index_of[ep.id]
        self.sched.pre_request(req, result)
        rec.endpoint = ep.id
        self.routed[ep.id] += 1
        fl = self._flights[rid] = _Flight(rec, req, result, LoadTicket(ep, len(tokens), item.output_len, lora), i,
                                          entry)
        if lora is not None:
            self.lora_placements.setdefault(lora, set()).add(ep.id)
        return i, fl, tokens

    def _admit(self, i: int, req: EngineRequest, t: float) -> None:
        """Hand a request to engine i and start its step loop if it is idle."""
        self.engines[i].add_request(req)
        if not self._busy[i]:
            self._start_step(i, t)

    def _start_step(self, i: int, t: float) -> None:
        out = self.engines[i].step(t)
        self._busy[i] = True
        debt = self._host_debt[i]
        if debt:
            self._host_debt[i] = 0.0
        dur = out.duration_s
        sigma = self._jitter_sigma
        if sigma:
            dur *= self._jitter_rng.lognormvariate(self._jitter_mu, sigma)
        self._push(t + max(dur + debt, MIN_STEP_S), _STEP, i, out)

    def _step_done(self, i: int, out: StepOutput, t: float, on_done: Any) -> None:
        if out.kv_events:
            self.applier.apply_events(self.all_endpoints[i].id, out.kv_events)
        flights = self._flights
        for rid in getattr(out, "decoded", ()):  # compact engines: one plain decode token each
            fl = flights.get(rid)
            if fl is None:
                continue
            rec = fl.rec
            last = rec.last_token_s
            if last is not None:
                rec.itl_s.append(t - last)
            rec.last_token_s = t
            rec.output_tokens += 1
        for rt in out.outputs:
            fl = flights.get(rt.request_id)
            if fl is None:
                continue
            rec = fl.rec
            last = rec.last_token_s
            if rt.finish_reason is None and last is not None and len(rt.token_ids) == 1:
                # the hot path, one decode token: RequestRecord.on_tokens inlined
                rec.itl_s.append(t - last)
                rec.last_token_s = t
                rec.output_tokens += 1
                continue
            if rt.token_ids:
                if rec.first_token_s is None:
                    fl.ticket.first_token()
                    rec.cached_tokens = rt.num_cached_tokens
                rec.on_tokens(t, len(rt.token_ids))
            if rt.finish_reason is not None:
                if rt.finish_reason in ("abort", "error"):
                    rec.error = f"engine_{rt.finish_reason}"
                rec.end_s = t
                fl.ticket.release()
                self.sched.response_complete(fl.req, fl.result, self.all_endpoints[i].id, rec.cached_tokens)
                if rec.error is None:
                    n, ft = rec.output_tokens, rec.first_token_s
                    tpot = (t - ft) / (n - 1) if ft is not None and n >= 2 else None
                    self.prediction.add(record_latency(fl.req, self.all_endpoints[i].id, ft, tpot))
                del flights[rt.request_id]
                if fl.entry is not None:
                    assert self.flow is not None
                    granted = self.flow.release(fl.entry)
                    if granted:
                        self._settle(granted, t)
                self._on_finished(t)
        if self.engines[i].has_work():
            self._start_step(i, t)
        else:
            self._busy[i] = False
            if self.autoscaler is not None:
                self.autoscaler.on_idle(i, t)

    def _on_finished(self, t: float, *, rejected: bool = False) -> None:
        self.progress.advance(self._bar)
        if self._closed_loop is not None:
            self._closed_loop(t + REJECT_S if rejected else t)

    # -- stages ------------------------------------------------------------------------------------
    def _run_stage(self, plan: StagePlan) -> StageResult:
        st, t0 = plan.stage, self.clock.now()
        total = st.num_requests or (int(st.rate * st.duration_s) if st.rate and st.duration_s else None)
        self._bar = self.progress.add(plan.label, total)
        self._stage_records, self._stage_bounds = [], []
        self._closed_loop = None
        if st.concurrency is not None:
            budget = itertools.count(1)
            t_end = t0 + st.duration_s if st.duration_s else None

            def next_one(t: float) -> None:
                if (t_end is None or t < t_end) and (st.num_requests is None or next(budget) <= st.num_requests):
                    item = next(self.items, None)
                    if item is not None:
                        self._push(t, _ARRIVE, item, plan.index)

            self._closed_loop = next_one
            for _ in range(st.concurrency):
                next_one(t0)
        else:
            offsets = arrival_offsets(st, plan.kind, self.load_rng)
            self._push_arrivals(plan.index, (t0 + o for o in offsets))
        self._drain()
        self._closed_loop = None
        summary = self._with_headroom(summarize(self._stage_records, requested_rate=st.rate,
                                                concurrency=st.concurrency, slo=self.cfg.slo))
        return StageResult(plan.index, plan.label, summary, self._stage_records)

    def _with_headroom(self, summary: StageSummary) -> StageSummary:
        recs = self._stage_records
        span = max(r.scheduled_s for r in recs) - min(r.scheduled_s for r in recs) if recs else None
        ttft = summary.latency.ttft
        h = stage_headroom(self._stage_bounds, ttft.to_json() if ttft is not None else None,
                           summary.throughput.output_tokens_per_s, span,
                           None if self.autoscaler is not None else self.c.replicas)
        return replace(summary, headroom=h)

    def _push_arrivals(self, stage: int, times: Iterator[float]) -> None:
        """Arrivals chained one at a time (bounded heap): each arrival pushes the next."""
        pairs = ((t, it) for t, it in zip(times, self.items))  # noqa: B905 - trace/items may end first

        def chain(t: float) -> None:
            nxt = next(pairs, None)
            if nxt is not None:
                self._push(nxt[0], _ARRIVE, _Chained(nxt[1], chain), stage)

        chain(0.0)

    def run(self) -> RunResult:
        # Every decode token allocates a few small container objects and the run holds millions of
        # long-lived ones (records, index, token lists): default thresholds rescan them constantly.
        old = gc.get_threshold()
        gc.set_threshold(100_000, 50, 100)
        try:
            with self.progress:
                return self._run()
        finally:
            gc.set_threshold(*old)

    def _run(self) -> RunResult:
        started, wall0, cpu0 = now_utc(), time.perf_counter(), time.process_time()
        stages: list[StageResult] = []
        if self.cfg.load.type == "trace":
            items = list(self.items)
            self.items = iter(items)
            self._stage_records, self._stage_bounds, self._closed_loop = [], [], None
            self._bar = self.progress.add("trace", len(items))
            self._push_arrivals(0, iter([it.arrival_s or 0.0 for it in items]))
            self._drain()
            span = (items[-1].arrival_s or 0.0) if items else 0.0
            rate = (len(items) - 1) / span if span > 0 else None
            summary = self._with_headroom(summarize(self._stage_records, requested_rate=rate, slo=self.cfg.slo))
            stages.append(StageResult(0, "trace", summary, self._stage_records))
        else:
            driver = StageDriver(self.cfg.load)
            last: StageSummary | None = None
            while (plan := driver.next(last)) is not None:
                res = self._run_stage(plan)
                last = res.summary
                if not plan.is_warmup:
                    stages.append(res)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        sim = self.clock.now()
        extra: dict[str, Any] = {"virtual_time_s": sim, "wall_time_s": wall, "cpu_time_s": cpu,
                 "speedup_vs_real_time": sim / wall if wall else None,
                 "speedup_vs_real_time_cpu": sim / cpu if cpu else None,
                 "num_events": self.num_events, "routed": dict(sorted(self.routed.items())),
                 "policy": self.c.policy, "scheduler_plugins": self.sched.plugin_names()}
        if self.prediction.count:
            extra["prediction"] = self.prediction.summary()
        if self.adapters is not None:
            extra["lora"] = lora_summary([e.id for e in self.all_endpoints], self.engines, self.lora_placements)
        if self.autoscaler is not None:
            extra["autoscale"] = self.autoscaler.summary(sim)
        if self.flow is not None:
            fs = self.flow.stats()
            extra["flow_control"] = {"admitted": fs.admitted_total, "dispatched": fs.dispatched_total,
                                     "enqueued": fs.enqueued_total, "dropped": fs.dropped,
                                     "queue_wait_s_sum": fs.queue_wait_s_sum}
        return RunResult(self.cfg, stages, started, now_utc(), "virtual", extra)


def run_virtual(cfg: BenchConfig, engine_factory: Any = make_engine, *, progress: bool = False) -> RunResult:
    if cfg.cluster is not None and cfg.cluster.pd is not None:
        from lanterna.cluster.virtual_pd import PDVirtualCluster

        return PDVirtualCluster(cfg, engine_factory, progress=progress).run()
    return VirtualCluster(cfg, engine_factory, progress=progress).run()
