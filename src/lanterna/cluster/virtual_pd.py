"""The virtual-time cluster with prefill/decode disaggregation (``cluster.pd``), same timing as the real sims.

Why: P/D splits (xPyD) and decider thresholds are swept in seconds of CPU with the production scheduler
(``disagg-profile-handler`` + ``prefix-based-pd-decider`` + role filters) and the simulator's engines.

Per request the scheduler picks a decode endpoint and, when the decider disaggregates, a prefill endpoint:

    arrival --schedule--> prefill engine (do_remote_decode, 1 token)
            --prefill done + link.transfer_s(prompt x kv_bytes_per_token)--> decode engine (remote_prefill:
              the prompt counts as computed, one token scheduled) --> tokens to the client

as placement ``gateway`` does it and ``lanterna sim`` times it (``sim.kv_link``: setup + bytes / bandwidth,
paid before the decode engine admits the request). The client's first token is the decode engine's, so TTFT
includes prefill, transfer and the decode's admission. Decode-only requests run as in ``VirtualCluster``.
Prefill never fails here (failure paths are covered by the real-process tests).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from lanterna.bench.config import BenchConfig
from lanterna.bench.metrics import RequestRecord
from lanterna.bench.report import RunResult
from lanterna.bench.workloads import WorkItem
from lanterna.cluster.policies import pd_policy_doc
from lanterna.cluster.virtual import _ARRIVE, VirtualCluster, make_engine
from lanterna.endpoints.types import ROLE_DECODE, ROLE_LABEL, ROLE_PREFILL
from lanterna.flowcontrol import FlowEntry
from lanterna.routing.accounting import LoadTicket
from lanterna.scheduler import Scheduler, SchedulerServices, parse_epp_config
from lanterna.sim.kv_link import KVLink, make_link
from lanterna.sim.profiles import get_profile
from lanterna.sim.types import EngineRequest, RemotePrefill, StepOutput

PREFILL_SUFFIX = ":prefill"


@dataclass(slots=True)
class _Transfer:
    """A finished prefill whose KV is on the wire to its decode engine (an arrival-kind heap event)."""

    rid: str
    decode: int
    tokens: list[int]
    max_tokens: int


class PDVirtualCluster(VirtualCluster):
    def __init__(self, cfg: BenchConfig, engine_factory: Any = make_engine, *, progress: bool = False) -> None:
        super().__init__(cfg, engine_factory, progress=progress)
        pd = self.c.pd
        assert pd is not None
        if pd.prefill_replicas >= self.c.replicas:
            raise ValueError(f"pd.prefill_replicas ({pd.prefill_replicas}) must leave at least one decode replica "
                             f"of {self.c.replicas}")
        for i, ep in enumerate(self.endpoints):
            ep.labels[ROLE_LABEL] = ROLE_PREFILL if i < pd.prefill_replicas else ROLE_DECODE
        if self.c.policy == "pd":
            self.sched = Scheduler.from_config(parse_epp_config(pd_policy_doc(pd.threshold)),
                                               rng=random.Random(cfg.seed), clock=self.clock,
                                               services=SchedulerServices(kv_index=self.index))
        self.link: KVLink = make_link(pd.link, pd.link_bandwidth_gbps * 1e9 if pd.link_bandwidth_gbps else None,
                                      pd.link_setup_ms / 1e3 if pd.link_setup_ms is not None else None)
        self.kv_bytes_per_token = get_profile(self.c.profile).kv_bytes_per_token
        self._prefilling: dict[str, tuple[_Transfer, LoadTicket]] = {}
        self.num_pd = self.num_decode_only = 0
        self.transfer_s_sum = 0.0

    def _dispatch(self, rec: RequestRecord, item: WorkItem, entry: FlowEntry | None, t: float) -> bool:
        got = self._schedule(rec, item, entry, t)
        if got is None:
            return False
        i, fl, tokens = got
        rid, lora = rec.request_id, fl.req.lora
        pf = fl.result.prefill()
        if pf is None or pf.id == fl.ticket.endpoint.id:
            self.num_decode_only += 1
            self._admit(i, EngineRequest(rid, tokens, item.output_len, arrival_time=t, lora_name=lora), t)
            return True
        self.num_pd += 1
        p = self._index_of[pf.id]
        self.routed[f"{pf.id} (prefill)"] += 1
        self._prefilling[rid + PREFILL_SUFFIX] = (_Transfer(rid, i, tokens, item.output_len),
                                                  LoadTicket(pf, len(tokens), 1))
        self._admit(p, EngineRequest(rid + PREFILL_SUFFIX, tokens, 1, arrival_time=t, do_remote_decode=True), t)
        return True

    def _step_done(self, i: int, out: StepOutput, t: float, on_done: Any) -> None:
        prefilling = self._prefilling
        if prefilling:
            for rt in out.outputs:
                if rt.finish_reason is None or rt.request_id not in prefilling:
                    continue
                xfer, ticket = prefilling.pop(rt.request_id)
                ticket.release()
                if rt.finish_reason in ("abort", "error"):  # the prefill could not run: prefill locally
                    self._admit(xfer.decode, EngineRequest(xfer.rid, xfer.tokens, xfer.max_tokens, arrival_time=t), t)
                    continue
                dt = self.link.transfer_s(len(xfer.tokens) * self.kv_bytes_per_token)
                self.transfer_s_sum += dt
                self._push(t + dt, _ARRIVE, xfer, None)  # an arrival kind: ``_arrive`` below recognises a transfer
        super()._step_done(i, out, t, on_done)

    def _arrive(self, item: Any, stage: int, t: float) -> None:
        if type(item) is _Transfer:
            self._admit(item.decode, EngineRequest(item.rid, item.tokens, item.max_tokens, arrival_time=t,
                                                   remote_prefill=RemotePrefill()), t)
            return
        super()._arrive(item, stage, t)

    def run(self) -> RunResult:
        res = super().run()
        pd = self.c.pd
        assert pd is not None
        n = self.num_pd + self.num_decode_only
        res.extra["pd"] = {"prefill_replicas": pd.prefill_replicas, "decode_replicas": self.c.replicas -
                           pd.prefill_replicas, "threshold": pd.threshold, "link": self.link.kind,
                           "num_prefill_decode": self.num_pd, "num_decode_only": self.num_decode_only,
                           "disagg_share": self.num_pd / n if n else None,
                           "mean_transfer_s": self.transfer_s_sum / self.num_pd if self.num_pd else None}
        return res
