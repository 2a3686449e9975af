"""The gateway's Prometheus registry, with llm-d / Gateway API Inference Extension metric names.

Names and labels follow GAIE's EPP (``inference_objective_*`` labelled ``model_name`` and
``target_model_name``; ``inference_pool_*`` labelled ``name``; ``inference_extension_*``). One registry per
gateway instance so tests can run several in one process. The per-request histograms are ``LeanHistogram``s
(``obs/histogram.py``: same exposition, a fraction of ``prometheus_client``'s cost per observation).
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, disable_created_metrics

from lanterna.obs.histogram import HistogramChild, LeanHistogram
from lanterna.obs.predict_metrics import PredictionMetrics
from lanterna.protocol import metrics_names as mn

disable_created_metrics()  # type: ignore[no-untyped-call]  # GAIE's EPP exports no *_created series

_DURATION_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30,
                     45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600)
_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32778, 65536, 131072, 262144,
                  524288, 1048576)
_SCHED_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
_NTPOT_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_REQUEST_SIZE_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288,
                         1048576, 2097152, 4194304, 8388608, 16777216, 33554432, 67108864, 134217728, 268435456,
                         536870912, 1073741824)
_RESPONSE_SIZE_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32778, 65536)
_OBJ = ("model_name", "target_model_name")
_PLUGIN = ("extension_point", "plugin_type", "plugin_name")


class ObjectiveChildren:
    """The labelled children for one (model_name, target_model_name): ``labels()`` costs a lock and a
    dict lookup per call, so the hot path resolves them once per label pair."""

    __slots__ = ("request_total", "request_duration", "input_tokens", "output_tokens", "running", "ntpot",
                 "request_sizes", "response_sizes", "cached_tokens")

    def __init__(self, m: GatewayMetrics, model_name: str, target: str) -> None:
        self.request_total = m.request_total.labels(model_name, target)
        self.request_duration = m.request_duration.labels(model_name, target)
        self.input_tokens = m.input_tokens.labels(model_name, target)
        self.output_tokens = m.output_tokens.labels(model_name, target)
        self.running = m.running_requests.labels(model_name)
        self.ntpot = m.ntpot.labels(model_name, target)
        self.request_sizes = m.request_sizes.labels(model_name, target)
        self.response_sizes = m.response_sizes.labels(model_name, target)
        self.cached_tokens = m.prompt_cached_tokens.labels(model_name, target)

    def observe_completion(self, duration_s: float, request_bytes: int, response_bytes: int,
                           prompt_tokens: int | None, output_tokens: int | None,
                           cached_tokens: int | None) -> None:
        """Everything GAIE records when a response completes. NTPOT = duration / output tokens (GAIE's
        definition: end-to-end latency, queueing and prefill included), only when tokens were produced.

        NOTE: ``HistogramChild.observe`` inlined (same two lines), six times per request."""
        h = self.request_duration
        h.counts[bisect_left(h.bounds, duration_s)] += 1
        h.sum += duration_s
        h = self.request_sizes
        h.counts[bisect_left(h.bounds, request_bytes)] += 1
        h.sum += request_bytes
        h = self.response_sizes
        h.counts[bisect_left(h.bounds, response_bytes)] += 1
        h.sum += response_bytes
        if prompt_tokens is not None:
            h = self.input_tokens
            h.counts[bisect_left(h.bounds, prompt_tokens)] += 1
            h.sum += prompt_tokens
        if output_tokens:
            h = self.output_tokens
            h.counts[bisect_left(h.bounds, output_tokens)] += 1
            h.sum += output_tokens
            ntpot = duration_s / output_tokens
            h = self.ntpot
            h.counts[bisect_left(h.bounds, ntpot)] += 1
            h.sum += ntpot
        if cached_tokens is not None:
            h = self.cached_tokens
            h.counts[bisect_left(h.bounds, cached_tokens)] += 1
            h.sum += cached_tokens


class GatewayMetrics:
    __slots__ = ("_children",
        "registry", "request_total", "request_error_total", "request_duration", "input_tokens",
        "output_tokens", "running_requests", "pool_kv", "pool_queue", "pool_ready", "pod_queue",
        "scheduler_e2e", "retries_total", "upstream_failures_total", "circuit_open",
        "ntpot", "request_sizes", "response_sizes", "prompt_cached_tokens", "plugin_duration",
        "scheduler_attempts", "_plugin_children", "scheduled_ok", "scheduled_failed", "disagg_decisions",
        "pd_fallbacks", "prediction",
    )

    def __init__(self, pool_name: str = "lanterna") -> None:
        self._children: dict[tuple[str, str], ObjectiveChildren] = {}
        self._plugin_children: dict[tuple[str, str, str], HistogramChild] = {}
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.request_total = Counter("inference_objective_request_total",
                                     "The counter of requests broken out for each model.", _OBJ, registry=r)
        self.request_error_total = Counter("inference_objective_request_error_total",
                                           "The counter of requests errors broken out for each model.",
                                           (*_OBJ, "error_code"), registry=r)
        self.request_duration = LeanHistogram("inference_objective_request_duration_seconds",
                                          "Distribution of response latency.", _OBJ, buckets=_DURATION_BUCKETS,
                                          registry=r)
        self.input_tokens = LeanHistogram("inference_objective_input_tokens", "Distribution of input token count.",
                                      _OBJ, buckets=_TOKEN_BUCKETS, registry=r)
        self.output_tokens = LeanHistogram("inference_objective_output_tokens", "Distribution of output token count.",
                                       _OBJ, buckets=_TOKEN_BUCKETS, registry=r)
        self.ntpot = LeanHistogram(mn.GAIE_NTPOT,
                               "Inference objective latency divided by number of output tokens in seconds for each "
                               "model and target model.", _OBJ, buckets=_NTPOT_BUCKETS, registry=r)
        self.request_sizes = LeanHistogram(mn.GAIE_REQUEST_SIZES,
                                       "Inference objective requests size distribution in bytes for each model and "
                                       "target model.", _OBJ, buckets=_REQUEST_SIZE_BUCKETS, registry=r)
        self.response_sizes = LeanHistogram(mn.GAIE_RESPONSE_SIZES,
                                        "Inference objective responses size distribution in bytes for each model and "
                                        "target model.", _OBJ, buckets=_RESPONSE_SIZE_BUCKETS, registry=r)
        self.prompt_cached_tokens = LeanHistogram(mn.GAIE_PROMPT_CACHED_TOKENS,
                                              "Inference objective prompt cached token count distribution for "
                                              "requests in each model.", _OBJ, buckets=_TOKEN_BUCKETS, registry=r)
        self.running_requests = Gauge("inference_objective_running_requests",
                                      "Inference objective number of running requests in each model.",
                                      ("model_name",), registry=r)
        self.pool_kv = Gauge("inference_pool_average_kv_cache_utilization",
                             "The average kv cache utilization for an inference server pool.", ("name",), registry=r)
        self.pool_queue = Gauge("inference_pool_average_queue_size",
                                "The average number of requests pending in the model server queue.", ("name",),
                                registry=r)
        self.pool_ready = Gauge("inference_pool_ready_pods", "The number of ready pods in the inference server pool.",
                                ("name",), registry=r)
        self.pod_queue = Gauge("inference_pool_per_pod_queue_size", "The total number of requests pending in the "
                               "model server queue for each underlying pod.", ("name", "model_server_pod"),
                               registry=r)
        self.scheduler_e2e = LeanHistogram("inference_extension_scheduler_e2e_duration_seconds",
                                       "End-to-end scheduling latency distribution in seconds.",
                                       buckets=_SCHED_BUCKETS, registry=r)
        self.scheduler_attempts = Counter(mn.GAIE_SCHEDULER_ATTEMPTS,
                                          "Total number of scheduling attempts.", ("status",), registry=r)
        self.scheduled_ok = self.scheduler_attempts.labels("success")  # resolved once: counted per request
        self.scheduled_failed = self.scheduler_attempts.labels("failure")
        self.plugin_duration = LeanHistogram(mn.GAIE_PLUGIN_DURATION,
                                         "Plugin processing latency distribution in seconds for each extension "
                                         "point, plugin type and plugin name.", _PLUGIN, buckets=_SCHED_BUCKETS,
                                         registry=r)
        Info("inference_extension", "General information of the current build of Inference Extension.",
             registry=r).info({"commit": "lanterna", "build_ref": "0.1.0"})
        self.retries_total = Counter("lanterna_gateway_retries_total",
                                     "Requests re-sent to the next endpoint before the first byte.", registry=r)
        self.upstream_failures_total = Counter("lanterna_gateway_upstream_failures_total",
                                               "Failed upstream attempts by endpoint and reason.",
                                               ("endpoint", "reason"), registry=r)
        # llm-d's P/D decision counter (decision_type decode-only | prefill-decode), and the prefill legs that
        # gave no KV (the decode endpoint served the request aggregated) by reason.
        self.disagg_decisions = Counter("llm_d_inference_scheduler_disagg_decision_total",
                                        "Total number of disaggregation routing decisions made",
                                        ("model_name", "decision_type"), registry=r)
        self.pd_fallbacks = Counter("lanterna_gateway_pd_prefill_fallbacks_total",
                                    "P/D prefill legs that failed; the decode endpoint prefilled locally.",
                                    ("reason",), registry=r)
        self.circuit_open = Gauge("lanterna_gateway_circuit_open", "1 while an endpoint's circuit is open.",
                                  ("endpoint",), registry=r)
        self.prediction = PredictionMetrics(r)  # latency predictor accuracy (SLO routing)

    def observe_plugin(self, extension_point: str, plugin_type: str, plugin_name: str, seconds: float) -> None:
        """The scheduler's ``PluginTimer`` callback: one observation per plugin call (children cached,
        since ``labels()`` takes a lock and builds a tuple)."""
        key = (extension_point, plugin_type, plugin_name)
        h = self._plugin_children.get(key)
        if h is None:
            h = self._plugin_children[key] = self.plugin_duration.labels(*key)
        h.observe(seconds)

    def objective(self, model_name: str, target: str) -> ObjectiveChildren:
        key = (model_name, target)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = ObjectiveChildren(self, model_name, target)
        return c
