"""Decision latency of the recommended policy on its precise path (token ids + KV-event index).

``schedule_latency.py`` measures the text (approximate) path; this one measures what the gateway runs with
a tokenizer: ``cost-model-scorer`` matching the precise index plus its in-flight prefix map
(``scorer/pending.py``), against llm-d's precise config and round-robin. Each endpoint holds 16 prefixes
of ``tokens/2`` tokens in the index; ``inflight`` requests are outstanding (their prefixes in the map).
Budget (ARCHITECTURE.md section 4): < 0.3 ms p50 at 64 endpoints.

    .venv/bin/python benchmarks/cost_model_latency.py [--iters N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from lanterna.clock import VirtualClock
from lanterna.cluster.policies import resolve_policy
from lanterna.endpoints.types import Endpoint, EndpointLoad
from lanterna.kvindex.hashing import block_keys
from lanterna.kvindex.index import KVIndex
from lanterna.scheduler import SchedRequest, Scheduler, SchedulerServices

MODEL, BS = "m", 16


def bench(policy: str, n_eps: int, n_tokens: int, iters: int, inflight: int) -> tuple[float, float]:
    rng = random.Random(0)
    index = KVIndex()
    index.set_block_size(MODEL, BS)
    eps = [Endpoint(id=f"10.0.{i // 250}.{i % 250}:8000", address="x",
                    load=EndpointLoad(in_flight_requests=rng.randrange(8), in_flight_prefill_tokens=rng.randrange(8000),
                                      in_flight_decode_seqs=rng.randrange(8), in_flight_kv_tokens=rng.randrange(20000)))
           for i in range(n_eps)]
    prefixes = [[rng.randrange(50_000) for _ in range(n_tokens // 2)] for _ in range(16)]
    for e in eps:
        index.add_endpoint(e.id, MODEL)
        for p in rng.sample(prefixes, 4):
            keys = block_keys(p, BS, index.root(MODEL, None))
            index.store(e.id, keys, None, p[: len(keys) * BS], BS)
    sched = Scheduler.from_config(resolve_policy(policy), rng=random.Random(1), clock=VirtualClock(),
                                  services=SchedulerServices(kv_index=index))

    def request(i: int) -> SchedRequest:
        toks = rng.choice(prefixes) + [rng.randrange(50_000) for _ in range(n_tokens // 2)]
        return SchedRequest(f"r{i}", MODEL, token_ids=toks)

    for i in range(inflight):  # outstanding requests: their prefixes sit in the in-flight map
        r = request(-1 - i)
        sched.pre_request(r, sched.schedule(r, eps))
    reqs = [request(i) for i in range(iters)]
    times = []
    for r in reqs:
        t0 = time.perf_counter()
        sched.schedule(r, eps)
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times) * 1e3, times[int(len(times) * 0.99)] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=1000)
    args = ap.parse_args()
    print(f"{'policy':12} {'endpoints':>9} {'tokens':>7} {'inflight':>8} {'p50 ms':>8} {'p99 ms':>8} {'p50/precise':>11}")
    for n_eps in (8, 64):
        for n_tok in (1024, 8192):
            base = bench("precise", n_eps, n_tok, args.iters, 0)[0]
            for policy, inflight in (("precise", 0), ("lanterna", 0), ("lanterna", 512), ("round-robin", 0)):
                p50, p99 = bench(policy, n_eps, n_tok, args.iters, inflight)
                print(f"{policy:12} {n_eps:9d} {n_tok:7d} {inflight:8d} {p50:8.3f} {p99:8.3f} {p50 / base:11.2f}")


if __name__ == "__main__":
    main()
