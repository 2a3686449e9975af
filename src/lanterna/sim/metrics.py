"""vLLM's Prometheus metrics for one simulated server: same names, types, labels and buckets as vLLM 0.32.

One ``CollectorRegistry`` per server so several sims (or tests) can live in one process. Label children are
resolved once at start-up: the driver updates metrics every step, so lookups must not sit on the hot path.
Engine counters are cumulative in ``EngineStats``; we export them by adding the delta since the last step.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from lanterna.protocol import metrics_names as mn

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Every step's lateness (the gauge only holds the last): benchmarks diff its buckets over a phase to get the
# share of steps that started more than 50 ms behind schedule. 0.05 is a bucket edge so that share is exact.
STEP_LATENESS = "lanterna_sim_step_lateness_seconds"
STEP_LATENESS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)


def observe_many(hist: Any, amount: float, count: int) -> None:
    """``count`` observations of one value with one bucket increment (``observe`` scans the buckets and takes
    two locks per call). The driver needs it for inter-token latency: every request that got a token in the
    same two steps has the same gap, so a 200-stream step has a handful of distinct values, not 200.
    Reads prometheus_client's histogram-child internals; without them it falls back to ``observe``."""
    try:
        bounds, buckets, total = hist._upper_bounds, hist._buckets, hist._sum
    except AttributeError:
        for _ in range(count):
            hist.observe(amount)
        return
    total.inc(amount * count)
    buckets[bisect_left(bounds, amount)].inc(count)  # first bound >= amount: observe's `amount <= bound`


@dataclass(slots=True)
class RequestTiming:
    """Wall times (loop clock, seconds) of one request's life, filled in by the driver."""

    arrival: float
    max_tokens: int
    num_prompt_tokens: int = 0
    scheduled: float | None = None  # start of the step that produced the first token
    first_token: float | None = None
    last_token: float | None = None
    num_generated: int = 0


@dataclass(slots=True)
class CacheConfig:
    block_size: int
    num_gpu_blocks: int
    num_cpu_blocks: int | None
    enable_prefix_caching: bool
    num_gpu_blocks_override: int | None = None
    gpu_memory_utilization: float = 0.9
    kv_offloading_size_gib: float | None = None  # vLLM's label; None when offloading is off


class SimMetrics:
    """Owns the registry; ``expose()`` renders it with prometheus_client's own exposition."""

    def __init__(self, model_name: str, cache: CacheConfig, *, max_loras: int | None = None) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        lab = {"engine": "0", "model_name": model_name}
        ln = ["engine", "model_name"]

        def gauge(name: str, doc: str) -> Any:
            return Gauge(name, doc, ln, registry=r).labels(**lab)

        def counter(name: str, doc: str) -> Any:
            return Counter(name, doc, ln, registry=r).labels(**lab)

        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> Any:
            return Histogram(name, doc, ln, buckets=buckets, registry=r).labels(**lab)

        self.running = gauge(mn.NUM_REQUESTS_RUNNING, "Number of requests in model execution batches.")
        self.waiting = gauge(mn.NUM_REQUESTS_WAITING, "Number of requests waiting to be processed.")
        self.kv_usage = gauge(mn.KV_CACHE_USAGE_PERC, "KV-cache usage. 1 means 100 percent usage.")
        self.step_lag = gauge(mn.SIM_STEP_LAG, "How far the simulator's last step started behind its schedule.")
        self.step_lag_max = gauge(mn.SIM_STEP_LAG + "_max", "Largest step lag seen since start.")
        self.h_step_lag = Histogram(STEP_LATENESS, "How late each engine step started behind its schedule.",
                                    buckets=STEP_LATENESS_BUCKETS, registry=r)
        self.prefix_queries = counter(mn.PREFIX_CACHE_QUERIES,
                                      "Prefix cache queries, in terms of number of queried tokens.")
        self.prefix_hits = counter(mn.PREFIX_CACHE_HITS, "Prefix cache hits, in terms of number of cached tokens.")
        self.preemptions = counter(mn.NUM_PREEMPTIONS, "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter(mn.PROMPT_TOKENS, "Number of prefill tokens processed.")
        self.generation_tokens = counter(mn.GENERATION_TOKENS, "Number of generation tokens processed.")
        success = Counter(mn.REQUEST_SUCCESS, "Count of successfully processed requests.",
                          ["engine", "finished_reason", "model_name"], registry=r)
        self.success = {fr: success.labels(engine="0", finished_reason=fr, model_name=model_name)
                        for fr in mn.FINISHED_REASONS}
        self.h_prompt = hist(mn.REQUEST_PROMPT_TOKENS, "Number of prefill tokens processed.", mn.TOKEN_COUNT_BUCKETS)
        self.h_generation = hist(mn.REQUEST_GENERATION_TOKENS, "Number of generation tokens processed.",
                                 mn.TOKEN_COUNT_BUCKETS)
        self.h_iteration = hist(mn.ITERATION_TOKENS, "Histogram of number of tokens per engine_step.",
                                mn.ITERATION_TOKEN_BUCKETS)
        self.h_max_tokens = hist(mn.REQUEST_PARAMS_MAX_TOKENS, "Histogram of the max_tokens request parameter.",
                                 mn.TOKEN_COUNT_BUCKETS)
        self.h_ttft = hist(mn.TIME_TO_FIRST_TOKEN, "Histogram of time to first token in seconds.", mn.TTFT_BUCKETS)
        self.h_itl = hist(mn.INTER_TOKEN_LATENCY, "Histogram of inter-token latency in seconds.", mn.ITL_BUCKETS)
        self.h_tpot = hist(mn.TIME_PER_OUTPUT_TOKEN, "Histogram of time_per_output_token_seconds per request.",
                           mn.ITL_BUCKETS)
        self.h_e2e = hist(mn.E2E_REQUEST_LATENCY, "Histogram of e2e request latency in seconds.",
                          mn.REQUEST_LATENCY_BUCKETS)
        self.h_queue = hist(mn.REQUEST_QUEUE_TIME, "Histogram of time spent in WAITING phase for request.",
                            mn.REQUEST_LATENCY_BUCKETS)
        self.h_inference = hist(mn.REQUEST_INFERENCE_TIME, "Histogram of time spent in RUNNING phase for request.",
                                mn.REQUEST_LATENCY_BUCKETS)
        self.h_prefill = hist(mn.REQUEST_PREFILL_TIME, "Histogram of time spent in PREFILL phase for request.",
                              mn.REQUEST_LATENCY_BUCKETS)
        self.h_decode = hist(mn.REQUEST_DECODE_TIME, "Histogram of time spent in DECODE phase for request.",
                             mn.REQUEST_LATENCY_BUCKETS)
        info = {"block_size": str(cache.block_size), "cache_dtype": "auto",
                "enable_prefix_caching": str(cache.enable_prefix_caching), "engine": "0",
                "gpu_memory_utilization": str(cache.gpu_memory_utilization),
                "kv_offloading_backend": "native", "kv_offloading_size": str(cache.kv_offloading_size_gib),
                "num_cpu_blocks": str(cache.num_cpu_blocks),
                "num_gpu_blocks": str(cache.num_gpu_blocks),
                "num_gpu_blocks_override": str(cache.num_gpu_blocks_override),
                "prefix_caching_hash_algo": "sha256"}
        Gauge(mn.CACHE_CONFIG_INFO, "Information of the LLMEngine CacheConfig", list(info),
              registry=r).labels(**info).set(1)
        self._lora = (Gauge(mn.LORA_REQUESTS_INFO, "Running stats on lora requests.",
                            ["max_lora", "running_lora_adapters", "waiting_lora_adapters"], registry=r)
                      if max_loras is not None else None)
        self._max_loras = max_loras
        self._lora_key: tuple[str, str] | None = None
        self._last: dict[str, float] = {}

    def set_lora(self, running: list[str], waiting: list[str], now_wall: float) -> None:
        """vLLM sets one series per state with the wall time as value; we keep only the current one."""
        if self._lora is None:
            return
        key = (",".join(running), ",".join(waiting))
        if key == self._lora_key:
            return
        self._lora.clear()
        self._lora.labels(max_lora=str(self._max_loras), running_lora_adapters=key[0],
                          waiting_lora_adapters=key[1]).set(now_wall)
        self._lora_key = key

    def add_cumulative(self, name: str, counter: Any, total: float) -> None:
        delta = total - self._last.get(name, 0.0)
        if delta > 0:
            counter.inc(delta)
        self._last[name] = total

    def update_engine(self, stats: Any, num_step_tokens: int) -> None:
        """Gauges and counters from ``Engine.stats()`` after a step."""
        self.running.set(stats.num_running)
        self.waiting.set(stats.num_waiting)
        self.kv_usage.set(stats.kv_cache_usage)
        self.add_cumulative("q", self.prefix_queries, stats.prefix_cache_queries)
        self.add_cumulative("h", self.prefix_hits, stats.prefix_cache_hits)
        self.add_cumulative("p", self.preemptions, stats.num_preemptions)
        self.add_cumulative("pt", self.prompt_tokens, stats.num_prompt_tokens)
        self.add_cumulative("gt", self.generation_tokens, stats.num_generation_tokens)
        if num_step_tokens:
            self.h_iteration.observe(num_step_tokens)

    def set_lag(self, lag_s: float) -> None:
        self.step_lag.set(lag_s)
        self.h_step_lag.observe(lag_s)
        if lag_s > self._last.get("lag", 0.0):
            self._last["lag"] = lag_s
            self.step_lag_max.set(lag_s)

    def finish(self, t: RequestTiming, finish_reason: str, now: float) -> None:
        """Per-request histograms at completion (vLLM measures TTFT from arrival, queue included)."""
        self.success.get(finish_reason, self.success["error"]).inc()
        self.h_prompt.observe(t.num_prompt_tokens)
        self.h_generation.observe(t.num_generated)
        self.h_max_tokens.observe(t.max_tokens)
        self.h_e2e.observe(now - t.arrival)
        if t.first_token is None or t.scheduled is None:
            return
        self.h_ttft.observe(t.first_token - t.arrival)
        self.h_queue.observe(t.scheduled - t.arrival)
        self.h_prefill.observe(t.first_token - t.scheduled)
        self.h_decode.observe(now - t.first_token)
        self.h_inference.observe(now - t.scheduled)
        if t.num_generated > 1:
            self.h_tpot.observe((now - t.first_token) / (t.num_generated - 1))

    def expose(self) -> bytes:
        return generate_latest(self.registry)
