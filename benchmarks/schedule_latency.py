"""Scheduler decision latency: p50/p99 of ``Scheduler.schedule`` (no tokenization) per config and size.

Approximate index primed: every endpoint holds 20 routed prompts; each measured request shares half its
prefix with one endpoint. Budget (ARCHITECTURE.md section 4): < 0.3 ms p50 at 64 endpoints.
``predicted``: ``predicted-latency-scorer`` alone, requests with TTFT and TPOT SLOs (docs/design/slo.md).
Run: .venv/bin/python benchmarks/schedule_latency.py [--iters N] [--plugin-timer] [--only NAME]
``--plugin-timer`` times every plugin call into the gateway's ``inference_extension_plugin_duration_seconds``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from lanterna.clock import VirtualClock
from lanterna.endpoints.types import Endpoint, EndpointLoad, EndpointMetrics
from lanterna.scheduler import SchedRequest, Scheduler, load_epp_config

ROUND_ROBIN = {"plugins": [{"type": "round-robin"}],
               "schedulingProfiles": [{"name": "rr", "plugins": [{"pluginRef": "round-robin"}]}]}
PREDICTED = {"plugins": [{"type": "predicted-latency-scorer"}, {"type": "max-score-picker"}],
             "schedulingProfiles": [{"name": "slo", "plugins": [{"pluginRef": "predicted-latency-scorer"},
                                                                {"pluginRef": "max-score-picker"}]}]}
CONFIGS = {"default": "default", "lanterna": "lanterna", "predicted": PREDICTED, "round-robin": ROUND_ROBIN}
SLO_CONFIGS = {"predicted"}  # measured requests carry x-slo-ttft-ms / x-slo-tpot-ms (the headroom path)


def text(rng: random.Random, n_tokens: int) -> str:
    return "".join(rng.choice("abcdefghij ") for _ in range(n_tokens * 4))


def bench(cfg_name: str, n_eps: int, n_tokens: int, iters: int, timed: bool = False) -> tuple[float, float]:
    rng = random.Random(0)
    sched = Scheduler.from_config(load_epp_config(CONFIGS[cfg_name]), rng=random.Random(1), clock=VirtualClock())
    if timed:
        from lanterna.obs.metrics import GatewayMetrics

        sched.set_plugin_timer(GatewayMetrics().observe_plugin, time.perf_counter)
    eps = [Endpoint(id=f"10.0.{i // 250}.{i % 250}:8000", address="x",
                    metrics=EndpointMetrics(num_waiting=rng.randrange(4), kv_cache_usage=rng.random()),
                    load=EndpointLoad(in_flight_requests=rng.randrange(8), in_flight_kv_tokens=rng.randrange(20000)))
           for i in range(n_eps)]
    prefixes = [text(rng, n_tokens) for _ in range(16)]
    for i in range(20 * n_eps):  # prime the approximate index
        r = SchedRequest(f"p{i}", "m", prompt_text=rng.choice(prefixes))
        res = sched.schedule(r, eps)
        sched.pre_request(r, res)
    reqs = [SchedRequest(f"r{i}", "m", prompt_text=rng.choice(prefixes)[: n_tokens * 2] + text(rng, n_tokens // 2))
            for i in range(iters)]
    if cfg_name in SLO_CONFIGS:
        for r in reqs:
            r.slo_ttft_s, r.slo_tpot_s, r.received_at = 2.0, 0.05, 0.0
    samples = []
    for r in reqs:
        t0 = time.perf_counter()
        sched.schedule(r, eps)
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return statistics.median(samples) * 1e3, samples[int(0.99 * (len(samples) - 1))] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--plugin-timer", action="store_true")
    ap.add_argument("--only", choices=sorted(CONFIGS), help="measure one config (and round-robin)")
    args = ap.parse_args()
    names = [n for n in CONFIGS if args.only in (None, n) or n == "round-robin"]
    t = args.plugin_timer
    print(f"{'config':<12} {'endpoints':>9} {'tokens':>7} {'p50 ms':>8} {'p99 ms':>8} {'p50/rr':>7}")
    for n_tokens in (1024, 8192):
        for n_eps in (8, 64, 256):
            rr = bench("round-robin", n_eps, n_tokens, args.iters, t)[0]
            for name in names:
                p50, p99 = bench(name, n_eps, n_tokens, args.iters, t) if name != "round-robin" else (rr, bench(name, n_eps, n_tokens, args.iters, t)[1])
                print(f"{name:<12} {n_eps:>9} {n_tokens:>7} {p50:>8.3f} {p99:>8.3f} {p50 / rr:>7.1f}")


if __name__ == "__main__":
    main()
