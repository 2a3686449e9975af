"""A burst of identical-prefix requests must not all land on one replica when load is accounted.

The gateway bumps ``Endpoint.load`` at dispatch (before any response or metrics scrape), so the burst is
simulated by updating load after each pick and never completing a request. Scraped metrics stay stale
(all zero), as they would be within one 50-100 ms scrape interval.
"""

from __future__ import annotations

from collections import Counter

from lanterna.scheduler import default_epp_config, lanterna_recommended_config
from tests.unit.scheduler.helpers import ep, req, scheduler

PROMPT = "You are a helpful assistant that answers in detail. " * 80  # ~1000 tokens, shared prefix
MAX_TOKENS = 128


def run_burst(cfg, n=100, n_endpoints=4, seed=7):
    sched = scheduler(cfg, seed=seed)
    eps = [ep(f"10.0.0.{i}:8000") for i in range(n_endpoints)]
    landed = Counter()
    for i in range(n):
        r = req(PROMPT + f" question {i}", request_id=f"r{i}", max_tokens=MAX_TOKENS)
        res = sched.schedule(r, eps)
        sched.pre_request(r, res)
        target = res.targets[0]
        toks = r.num_prompt_tokens_estimate
        target.load.in_flight_requests += 1  # what the gateway does at dispatch
        target.load.in_flight_prefill_tokens += toks
        target.load.in_flight_decode_seqs += 1
        target.load.in_flight_kv_tokens += toks + MAX_TOKENS
        landed[target.id] += 1
    return sorted(landed.values(), reverse=True)


def test_burst_default_config_hotspots():
    counts = run_burst(default_epp_config())
    print("default config:", counts)
    assert counts[0] == 100  # llm-d's default only sees stale metrics: prefix affinity wins every time


def test_burst_recommended_config_balances():
    counts = run_burst(lanterna_recommended_config())
    print("lanterna config:", counts)
    assert len(counts) == 4 and max(counts) - min(counts) <= 2


def test_burst_recommended_still_prefers_warm_replica_when_idle():
    """Balancing must not kill affinity: with no load, the replica that has the prefix wins."""
    sched = scheduler(lanterna_recommended_config(), seed=3)
    eps = [ep(f"e{i}") for i in range(4)]
    first = req(PROMPT, request_id="warm")
    res = sched.schedule(first, eps)
    sched.pre_request(first, res)
    for _ in range(10):  # every later request with the same prefix, all replicas idle
        r = req(PROMPT + " follow-up")
        assert sched.schedule(r, eps).targets[0] is res.targets[0]
