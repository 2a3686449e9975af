"""Predicted-latency scorer, type ``predicted-latency-scorer`` (llm-d/GAIE's name; alias ``latency-scorer``).

Predicts TTFT and TPOT of the request on every candidate (``lanterna.scheduler.predict``: online ridge per
model over uncached prompt tokens, the gateway's in-flight prefill tokens / sequences / KV tokens, scraped
queue and KV use, prefix share, adapter loaded), then scores:

- with an SLO (``x-slo-ttft-ms`` / ``x-slo-tpot-ms``): the probability of meeting it, taking the predictor's
  own relative error ``s`` (EWMA of observed APE, floor ``minRelErr``) as its uncertainty:
  ``p(e) = prod over given SLOs of sigmoid((budget / predicted(e) - 1) / s)``; the TTFT budget is the SLO less
  the time the request already waited (a spent budget drops the TTFT factor and counts as a sure miss for
  shedding). ``score = p x (0.9 + 0.1 x f)`` where ``f`` is the no-SLO score below:
  the probability (headroom over uncertainty), not the minimum latency, decides; among endpoints that all
  (almost) surely meet the SLO, the fastest wins (its prefix hit, its short queue), so headroom is not spent
  on moving a request away from its cache;
- without an SLO: ``1 - (ttftWeight x n(ttft) + tpotWeight x n(tpot))`` with ``n`` min-max normalisation over
  the candidates (lowest predicted latency wins, as llm-d does when no SLO is set).

Affinity gate (llm-d's): when some candidates hold at least ``affinityGateTau`` of the prompt in cache (and
are not ``affinityMaxTTFTPenaltyMs`` slower than the rest), only they score, unless none of them is likely to
meet the SLO while another is. Without it the predictor, which prices only the request's own latency, gave up
hits for slightly shorter queues (4:1 at 32 QPS: hit rate 0.94 -> 0.89, the pool's KV saturated, P90 TTFT 20 s).

Early shedding: a sheddable request (priority < 0) with an SLO that no candidate meets with probability
``shedBelow`` or more is refused with 429 ``rejected-saturated`` (``SloShed``) before any replica works on it.

Cached tokens come from the precise KV-event index (plus prefixes this scorer sent that are still prefilling,
``pending.py``) or the approximate one; the gateway's queued prefill tokens are scaled by the uncached share of
the requests this scorer sent to the endpoint (as ``cost-model-scorer`` does: a warm replica's queue is short).
Data producer (predictions once per request, ``STATE_PREDICTIONS``); pre-request hook (records the features
of the pick, ``STATE_LATENCY_DECISION``, which ``record_latency`` turns into a training sample at completion).
Params: ``bootstrapProfile`` (simulator profile whose timing model gives the prior, "" = none;
``llama-3.1-8b-h100``), ``maxNumBatchedTokens`` (8192, the servers' token budget, for the prior),
``maxNumSeqs`` (256, the servers' seat limit), ``meanOutputTokens`` (512, for the prior's seat wait),
``affinityGateTau`` (0.5; llm-d 0.8, but its share counts blocks of the shared prefix only), ``affinityMaxTTFTPenaltyMs`` (5000),
``forget`` (0.998), ``ttftWeight`` (0.8), ``tpotWeight`` (0.2), ``minRelErr`` (0.05), ``shedBelow`` (0.5),
``blockSizeTokens`` (16)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from lanterna.endpoints.types import Endpoint
from lanterna.errors import RateLimited
from lanterna.kvindex.approx import ApproxPrefixIndex
from lanterna.scheduler.framework.interfaces import KVIndexView, Plugin, SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest, SchedulingResult
from lanterna.scheduler.plugins.scorer.cost_model import precise_prefix_match
from lanterna.scheduler.plugins.scorer.pending import PendingPrefixes
from lanterna.scheduler.plugins.scorer.prefix_cache import PrefixCacheScorer
from lanterna.scheduler.predict import (
    STATE_LATENCY_DECISION,
    LatencyDecision,
    LatencyPredictor,
    prior_from_profile,
)
from lanterna.scheduler.predict.features import tpot_features, ttft_features

TYPE = "predicted-latency-scorer"
STATE_PREDICTIONS = "lanterna/predicted-latency/predictions"
"""``req.state`` key: ``Predictions`` for the candidates of this cycle."""
_STATE_SENT = "lanterna/predicted-latency/sent"  # (endpoint id, prompt tokens, uncached tokens) of the pick
DROPPED_REASON_HEADER = "x-llm-d-request-dropped-reason"


class SloShed(RateLimited):
    """A sheddable request predicted to miss its SLO on every endpoint (429, llm-d's ``rejected-saturated``)."""


class Params(PluginParams):
    bootstrapProfile: str = "llama-3.1-8b-h100"
    maxNumBatchedTokens: int = Field(8192, ge=16)
    maxNumSeqs: int = Field(256, ge=1)
    meanOutputTokens: int = Field(512, ge=1)
    forget: float = Field(0.998, gt=0, le=1)
    ttftWeight: float = Field(0.8, ge=0)
    tpotWeight: float = Field(0.2, ge=0)
    minRelErr: float = Field(0.05, gt=0)
    shedBelow: float = Field(0.5, ge=0, le=1)
    blockSizeTokens: int = Field(16, ge=1)
    affinityGateTau: float = Field(0.5, ge=0, le=1)
    affinityMaxTTFTPenaltyMs: float = Field(5000.0, ge=0)


@dataclass(slots=True)
class Predictions:
    """Per endpoint id: (predicted TTFT s from now, predicted TPOT s, cached tokens), and the TTFT already spent."""

    by_endpoint: dict[str, tuple[float, float, float]]
    waited_s: float


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


@dataclass(slots=True)
class PredictedLatencyScorer:
    name: str
    params: Params
    predictor: LatencyPredictor
    kv_index: KVIndexView | None
    approx: PrefixCacheScorer
    clock_now: Any  # () -> float, the scheduler's clock
    owns_approx: bool = True
    type_name: str = TYPE
    # per endpoint: [prompt, uncached] tokens of the requests this scorer sent there, still in flight
    sent: dict[str, list[float]] = field(default_factory=dict)
    pending: PendingPrefixes = field(default_factory=PendingPrefixes)

    def bind(self, plugins: Mapping[str, Plugin]) -> None:
        shared = [p for p in plugins.values() if isinstance(p, PrefixCacheScorer)]
        if shared:
            self.approx, self.owns_approx = shared[0], False

    # -- data producer --------------------------------------------------------------------------------------
    def _cached(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        if self.kv_index is not None and req.token_ids is not None:
            m = precise_prefix_match(req, self.kv_index, candidates, self.params.blockSizeTokens)
            if m is not None:
                bs = m.block_size_tokens
                cached = {k: v * bs for k, v in m.matched.items()}
                for eid, n in self.pending.match(req, bs, candidates).items():  # prefixes still prefilling
                    if n * bs > cached.get(eid, 0.0):
                        cached[eid] = n * bs
                return cached
        am = self.approx.match_for(req, candidates)
        bs = am.block_size_tokens or self.params.blockSizeTokens
        return {k: v * bs for k, v in am.matched.items()}

    def produce(self, req: SchedRequest, candidates: list[Endpoint]) -> None:
        self.predict(req, candidates)

    def predict(self, req: SchedRequest, candidates: list[Endpoint]) -> Predictions:
        got = req.state.get(STATE_PREDICTIONS)
        if got is not None:
            return got  # type: ignore[no-any-return]
        cached = self._cached(req, candidates)
        prompt = float(req.num_prompt_tokens_estimate)
        ct, cp = self.predictor.coefs(req.model)
        a0, a1, a2, a3, a4, a5, a6, a7, a8, a9 = ct
        seats = float(self.params.maxNumSeqs)
        b0, b1, b2, b3, b4, b5 = cp
        lora = req.lora
        sent = self.sent
        out: dict[str, tuple[float, float, float]] = {}
        # NOTE: the dot products of features.ttft_features / tpot_features, unrolled (the hot path: 64
        # candidates x 2 predictions per request); test_predicted_latency checks they agree.
        for e in candidates:
            ld, m = e.load, e.metrics
            c = cached.get(e.id, 0.0)
            u = (prompt - c if prompt > c else 0.0) * 1e-3
            q = ld.in_flight_prefill_tokens * 1e-3
            sp = sent.get(e.id)
            if sp is not None and sp[0] > 0:  # queued prompts are partly cached: count the uncached share
                q *= sp[1] / sp[0]
            d = ld.in_flight_decode_seqs * 0.0625
            over = ld.in_flight_decode_seqs + 1 - seats
            w, kv = m.num_waiting, m.kv_cache_usage
            na = 1.0 if lora is not None and lora not in m.running_lora_adapters else 0.0
            t = a0 + a1 * u + a2 * q + a3 * d + a4 * (u + q) * d + a5 * w + a6 * kv + a7 * (c / prompt) + a8 * na
            if over > 0:
                t += a9 * over * 0.0625
            p = b0 + b1 * (d + 0.0625) + b2 * ld.in_flight_kv_tokens * 1e-5 + b3 * q + b4 * kv + b5 * w
            out[e.id] = (t if t > 1e-3 else 1e-3, p if p > 1e-4 else 1e-4, c)
        waited = 0.0
        if req.received_at is not None:
            waited = max(0.0, self.clock_now() - req.received_at)
        pr = req.state[STATE_PREDICTIONS] = Predictions(out, waited)
        return pr

    # -- scorer ---------------------------------------------------------------------------------------------
    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        pr = self.predict(req, candidates)
        preds = pr.by_endpoint
        if not preds:
            return {}
        sticky = self._sticky(req, preds)
        if req.slo_ttft_s is None and req.slo_tpot_s is None:
            return self._gate(self._fastest(preds), sticky)
        scores, best = self.meet_probabilities(req, pr)
        if sticky:
            gated = self._gate(scores, sticky)
            if max(gated.values()) >= 0.9 * self.params.shedBelow or best < self.params.shedBelow:
                scores = gated  # stay on the cache unless leaving it is what meets the SLO
        if req.priority < 0 and best < self.params.shedBelow:
            raise SloShed(f"sheddable request {req.request_id} is predicted to miss its SLO on every endpoint",
                          headers={DROPPED_REASON_HEADER: "rejected-saturated", "Retry-After": "1"})
        return scores

    def _sticky(self, req: SchedRequest, preds: dict[str, tuple[float, float, float]]) -> set[str]:
        """Affinity gate (llm-d's): endpoints holding at least ``affinityGateTau`` of the prompt, unless their best
        predicted TTFT is ``affinityMaxTTFTPenaltyMs`` worse than the best elsewhere. Why: the predictor prices a
        request's own latency; a cache miss also costs the pool (recompute, duplicate KV), which it cannot see."""
        tau = self.params.affinityGateTau
        if tau <= 0:
            return set()
        need = tau * req.num_prompt_tokens_estimate
        sticky = {k for k, v in preds.items() if v[2] >= need and v[2] > 0}
        if not sticky or len(sticky) == len(preds):
            return set()
        best_in = min(preds[k][0] for k in sticky)
        best_out = min(v[0] for k, v in preds.items() if k not in sticky)
        return set() if best_in - best_out > self.params.affinityMaxTTFTPenaltyMs / 1e3 else sticky

    @staticmethod
    def _gate(scores: dict[str, float], sticky: set[str]) -> dict[str, float]:
        return {k: v if k in sticky else 0.0 for k, v in scores.items()} if sticky else scores

    def meet_probabilities(self, req: SchedRequest, pr: Predictions) -> tuple[dict[str, float], float]:
        """Scores (probability x fastest tie-break) per endpoint and the best raw probability."""
        errs = self.predictor.model(req.model)
        floor = self.params.minRelErr
        st, sp = max(errs.ttft_err.rel_err, floor), max(errs.tpot_err.rel_err, floor)
        budget = req.slo_ttft_s - pr.waited_s if req.slo_ttft_s is not None else None
        slo_tpot = req.slo_tpot_s
        # NOTE: a request whose TTFT budget is already spent (it waited longer than its SLO) has no TTFT
        # probability to rank by: (budget / t - 1) with budget < 0 would *favour* the slowest replica (seen: a
        # burst released from the flow-control queue all went to the busiest replica, P90 TTFT 97 s).
        lost = budget is not None and budget <= 0.0
        probs: dict[str, float] = {}
        for eid, (t, p, _) in pr.by_endpoint.items():
            prob = 1.0
            if budget is not None and not lost:
                prob *= _sigmoid((budget / t - 1.0) / st)
            if slo_tpot is not None:
                prob *= _sigmoid((slo_tpot / p - 1.0) / sp)
            probs[eid] = prob
        fast = self._fastest(pr.by_endpoint)
        scores = {k: probs[k] * (0.9 + 0.1 * fast[k]) for k in probs}
        return scores, 0.0 if lost else max(probs.values())

    def _fastest(self, preds: dict[str, tuple[float, float, float]]) -> dict[str, float]:
        wt, wp = self.params.ttftWeight, self.params.tpotWeight
        tot = wt + wp or 1.0
        tl = min(v[0] for v in preds.values())
        ts = max(v[0] for v in preds.values()) - tl
        pl = min(v[1] for v in preds.values())
        ps = max(v[1] for v in preds.values()) - pl
        out = {}
        for k, (t, p, _) in preds.items():
            nt = (t - tl) / ts if ts > 0 else 0.0
            np_ = (p - pl) / ps if ps > 0 else 0.0
            out[k] = 1.0 - (wt * nt + wp * np_) / tot
        return out

    # -- bookkeeping ----------------------------------------------------------------------------------------
    def pre_request(self, req: SchedRequest, result: SchedulingResult) -> None:
        if self.owns_approx:
            self.approx.pre_request(req, result)
        target = result.primary.primary
        pr = req.state.get(STATE_PREDICTIONS)
        if target is None or pr is None or target.id not in pr.by_endpoint:
            return
        c = pr.by_endpoint[target.id][2]
        prompt = float(req.num_prompt_tokens_estimate)
        ld, m = target.load, target.metrics
        lora = req.lora
        na = 1.0 if lora is not None and lora not in m.running_lora_adapters else 0.0
        sp = self.sent.setdefault(target.id, [0.0, 0.0])
        queued = ld.in_flight_prefill_tokens * (sp[1] / sp[0] if sp[0] > 0 else 1.0)
        tx = ttft_features(max(0.0, prompt - c), queued, ld.in_flight_decode_seqs,
                           m.num_waiting, m.kv_cache_usage, c / prompt, na, self.params.maxNumSeqs)
        px = tpot_features(ld.in_flight_decode_seqs, ld.in_flight_kv_tokens, queued, m.kv_cache_usage, m.num_waiting)
        req.state[STATE_LATENCY_DECISION] = LatencyDecision(self.predictor, req.model, target.id, tx, px,
                                                            self.clock_now())
        uncached = max(0.0, prompt - c)
        sp[0] += prompt
        sp[1] += uncached
        req.state[_STATE_SENT] = (target.id, prompt, uncached)
        if self.kv_index is not None and req.token_ids is not None:
            self.pending.add(req, target.id, self.kv_index.block_size_for(req.model) or self.params.blockSizeTokens)

    def response_complete(self, req: SchedRequest, result: SchedulingResult, endpoint_id: str,
                          num_cached_tokens: int | None) -> None:
        got = req.state.pop(_STATE_SENT, None)
        if got is not None:
            sp = self.sent.get(got[0])
            if sp is not None:
                sp[0] = max(0.0, sp[0] - got[1])
                sp[1] = max(0.0, sp[1] - got[2])
        self.pending.remove(req)

    def endpoint_removed(self, endpoint_id: str) -> None:
        self.sent.pop(endpoint_id, None)
        self.pending.remove_endpoint(endpoint_id)
        if self.owns_approx:
            self.approx.endpoint_removed(endpoint_id)


@register(TYPE, "latency-scorer", params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> PredictedLatencyScorer:
    p = parse_params(Params, TYPE, name, params)
    prior = (prior_from_profile(p.bootstrapProfile, budget=p.maxNumBatchedTokens, max_seqs=p.maxNumSeqs,
                                mean_output=p.meanOutputTokens) if p.bootstrapProfile else None)
    clock = services.clock
    now = clock.now if clock is not None else (lambda: 0.0)
    approx = PrefixCacheScorer(name=f"{name}/approx", index=ApproxPrefixIndex(block_chars=p.blockSizeTokens * 4))
    return PredictedLatencyScorer(name=name, params=p, predictor=LatencyPredictor(prior, forget=p.forget),
                                  kv_index=services.kv_index, approx=approx, clock_now=now)
