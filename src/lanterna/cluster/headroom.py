"""Headroom: what no routing policy can beat on a workload, so results read as a share of the achievable.

Per request (workload order = arrival order, request ``vN`` is item N), ``HeadroomModel.add`` gives:

- ``ttft_s``: the TTFT it would get if every reusable prefix hit (a prefix seen earlier in the run is cached
  wherever the request goes: perfect affinity, unlimited KV) and it never waited (perfect balance: an idle
  replica prefills its uncached tokens alone, in chunks of the token budget). A lower bound per request.
- ``work_s``: a lower bound on the replica busy time the request costs, under the same prefix hits and the
  most efficient batching the timing model allows: its batch tokens (uncached prompt + output - 1 decodes)
  each pay the per-token share of a full-budget step (overhead, linear layers, all-reduce), each sampled token
  the per-row share of a full ``max_num_seqs`` lm_head, plus its own prefill attention in one chunk and its
  decode attention's KV reads at full bandwidth. Each term is at most what any real schedule pays.

``stage_headroom`` turns a stage's bounds and measured summary into the report's ``headroom`` object:
``share_p90 = bound P90 TTFT / measured P90 TTFT`` (1.0 = at the bound) and, with ``replicas``,
``output_tok_s_bound = output tokens / max(work / replicas, arrival span + last request's e2e bound)`` (perfect
balance over the replicas; a stage cannot end before its last arrival has been served) and
``throughput_share = measured / bound``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lanterna.bench.workloads import WorkItem

SEEN_SEGMENTS_CAP = 1 << 20  # prefixes (segment-key chains) remembered (LRU): bounded memory on endless traces


@dataclass(frozen=True, slots=True)
class RequestBound:
    ttft_s: float
    work_s: float
    output_tokens: int
    e2e_s: float = 0.0  # ttft_s + each later token's cheapest possible step (alone on a replica)


class HeadroomModel:
    """Walks a workload in arrival order, tracking which prefixes a perfect router would have cached."""

    def __init__(self, profile: str, budget: int = 8192, max_seqs: int = 256) -> None:
        from lanterna.sim.profiles import get_profile
        from lanterna.sim.timing import PhysicsTimer

        self.p = get_profile(profile)
        self.timer = PhysicsTimer(self.p)
        self.budget = budget
        self.seen: OrderedDict[int, None] = OrderedDict()
        p = self.p
        self._tok_s = (p.overhead_s + p.linear_s(budget) + p.allreduce_s(budget)) / budget
        rows = max(1, min(max_seqs, budget))
        self._row_s = p.lm_head_s(rows) / rows
        self._kv_s = p.kv_bytes_per_token / (p.hbm_bandwidth_bps * p.dc_attn_bw_eff)  # per context token read
        self._prefill_cache: dict[tuple[int, int], float] = {}

    def add(self, item: WorkItem) -> RequestBound:
        cached, hit, seen, chain = 0, True, self.seen, 0
        for seg in item.segments:
            chain = hash((chain, seg.key))  # a prefix is the chain of its segments, not a segment alone
            if hit and chain in seen:
                cached += len(seg.tokens)
                seen.move_to_end(chain)
            else:
                hit = False
                seen[chain] = None
        while len(seen) > SEEN_SEGMENTS_CAP:
            seen.popitem(last=False)
        prompt = item.num_prompt_tokens
        todo = max(1, prompt - cached)  # vLLM recomputes the last prompt token on a full hit
        key = (todo, prompt - todo)
        ttft = self._prefill_cache.get(key)
        if ttft is None:
            ttft = self._prefill_s(todo, prompt - todo)
            if len(self._prefill_cache) < 65536:
                self._prefill_cache[key] = ttft
        out = max(1, item.output_len)
        decodes = out - 1
        # decode k (1..out-1) reads prompt + k - 1 context tokens... summed in closed form
        ctx_sum = decodes * prompt + decodes * (decodes - 1) // 2
        work = ((todo + decodes) * self._tok_s + out * self._row_s
                + self.p.prefill_attn_s(todo, prompt - todo) + ctx_sum * self._kv_s)
        p = self.p
        step = (p.overhead_s + p.linear_s(1) + p.lm_head_s(1) + p.allreduce_s(1) + p.num_layers * p.dc_attn_layer_s
                + prompt * p.kv_bytes_per_token / (p.hbm_bandwidth_bps * p.dc_attn_bw_eff))
        return RequestBound(ttft, work, out, ttft + decodes * step)

    def _prefill_s(self, todo: int, ctx: int) -> float:
        from lanterna.sim.timing import BatchShape

        t = 0.0
        while todo > 0:
            n = min(todo, self.budget)
            t += self.timer.step_time(BatchShape(prefill_chunks=[(n, ctx)], num_prefill_sampled=1 if n == todo else 0))
            todo -= n
            ctx += n
        return t


def bounds_for(items: Iterable[WorkItem], profile: str, budget: int = 8192, max_seqs: int = 256
               ) -> list[RequestBound]:
    model = HeadroomModel(profile, budget, max_seqs)
    return [model.add(it) for it in items]


def _share(bound: float | None, measured: float | None) -> float | None:
    return bound / measured if bound is not None and measured else None


def stage_headroom(bounds: Sequence[RequestBound], ttft: dict[str, Any] | None, output_tok_s: float | None,
                   arrival_span_s: float | None, replicas: int | None) -> dict[str, Any] | None:
    """The report's ``headroom`` object for one stage (see module). ``ttft``: the stage's measured TTFT stats
    (report keys mean/p50/p90/p99); ``replicas`` None: no throughput bound (autoscaling: the count varies)."""
    if not bounds:
        return None
    b = np.fromiter((x.ttft_s for x in bounds), dtype=np.float64, count=len(bounds))
    p50, p90, p99 = (float(v) for v in np.percentile(b, [50, 90, 99]))
    mean = float(b.mean())
    m = ttft or {}
    out: dict[str, Any] = {
        "ttft_mean_bound_s": mean, "ttft_p50_bound_s": p50, "ttft_p90_bound_s": p90, "ttft_p99_bound_s": p99,
        "share_mean": _share(mean, m.get("mean")), "share_p50": _share(p50, m.get("p50")),
        "share_p90": _share(p90, m.get("p90")), "share_p99": _share(p99, m.get("p99")),
    }
    if replicas:
        work = sum(x.work_s for x in bounds)
        span = max(work / replicas, (arrival_span_s or 0.0) + bounds[-1].e2e_s)
        tps = sum(x.output_tokens for x in bounds) / span if span > 0 else None
        out.update({"replicas": replicas, "work_s": work, "output_tok_s_bound": tps,
                    "throughput_share": _share(output_tok_s, tps)})
    return out


def report_headroom(report: dict[str, Any], records: Iterable[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """Headroom per stage of a saved virtual-cluster report (``report.json`` + its records), recomputed from the
    report's config: the workload is regenerated from its seed. The first record of stage 0 tells how many
    requests the warm-up took; stages then follow one another in request order (``num_requests`` each)."""
    from lanterna.bench.config import parse_config
    from lanterna.bench.workloads import iter_workload

    cfg = parse_config(report["config"])
    c = cfg.cluster
    assert c is not None, "headroom needs a virtual-cluster report"
    first = min((int(r["id"][1:]) for r in records if r.get("stage") == 0 and str(r.get("id", "")).startswith("v")),
                default=0)
    model = HeadroomModel(c.profile, c.max_num_batched_tokens, c.max_num_seqs)
    items = iter_workload(cfg.workload, cfg.seed)
    for _ in range(first):
        model.add(next(items))
    out = []
    replicas = None if c.autoscale is not None else c.replicas
    for s in report["stages"]:
        bs = [model.add(next(items)) for _ in range(s["num_requests"])]
        rate = s.get("scheduled_rate")
        span = (s["num_requests"] - 1) / rate if rate else None
        out.append(stage_headroom(bs, s["latency_s"]["ttft"], s["throughput"]["output_tokens_per_s"], span,
                                  replicas))
    return out
