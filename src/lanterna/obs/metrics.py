"""The gateway's Prometheus registry, with llm-d / Gateway API Inference Extension metric names.

Names and labels follow GAIE's EPP (``inference_objective_*`` labelled ``model_name`` and
``target_model_name``; ``inference_pool_*`` labelled ``name``; ``inference_extension_*``). One registry per
gateway instance so tests can run several in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]  # GAIE's EPP exports no *_created series

_DURATION_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30,
                     45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600)
_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32778, 65536, 131072, 262144,
                  524288, 1048576)
_SCHED_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
_OBJ = ("model_name", "target_model_name")


class ObjectiveChildren:
    """The labelled children for one (model_name, target_model_name): ``labels()`` costs a lock and a
    dict lookup per call, so the hot path resolves them once per label pair."""

    __slots__ = ("request_total", "request_duration", "input_tokens", "output_tokens", "running")

    def __init__(self, m: GatewayMetrics, model_name: str, target: str) -> None:
        self.request_total = m.request_total.labels(model_name, target)
        self.request_duration = m.request_duration.labels(model_name, target)
        self.input_tokens = m.input_tokens.labels(model_name, target)
        self.output_tokens = m.output_tokens.labels(model_name, target)
        self.running = m.running_requests.labels(model_name)


class GatewayMetrics:
    __slots__ = ("_children",
        "registry", "request_total", "request_error_total", "request_duration", "input_tokens",
        "output_tokens", "running_requests", "pool_kv", "pool_queue", "pool_ready", "pod_queue",
        "scheduler_e2e", "retries_total", "upstream_failures_total", "circuit_open",
    )

    def __init__(self, pool_name: str = "lanterna") -> None:
        self._children: dict[tuple[str, str], ObjectiveChildren] = {}
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.request_total = Counter("inference_objective_request_total",
                                     "The counter of requests broken out for each model.", _OBJ, registry=r)
        self.request_error_total = Counter("inference_objective_request_error_total",
                                           "The counter of requests errors broken out for each model.",
                                           (*_OBJ, "error_code"), registry=r)
        self.request_duration = Histogram("inference_objective_request_duration_seconds",
                                          "Distribution of response latency.", _OBJ, buckets=_DURATION_BUCKETS,
                                          registry=r)
        self.input_tokens = Histogram("inference_objective_input_tokens", "Distribution of input token count.",
                                      _OBJ, buckets=_TOKEN_BUCKETS, registry=r)
        self.output_tokens = Histogram("inference_objective_output_tokens", "Distribution of output token count.",
                                       _OBJ, buckets=_TOKEN_BUCKETS, registry=r)
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
        self.scheduler_e2e = Histogram("inference_extension_scheduler_e2e_duration_seconds",
                                       "End-to-end scheduling latency distribution in seconds.",
                                       buckets=_SCHED_BUCKETS, registry=r)
        Info("inference_extension", "General information of the current build of Inference Extension.",
             registry=r).info({"commit": "lanterna", "build_ref": "0.1.0"})
        self.retries_total = Counter("lanterna_gateway_retries_total",
                                     "Requests re-sent to the next endpoint before the first byte.", registry=r)
        self.upstream_failures_total = Counter("lanterna_gateway_upstream_failures_total",
                                               "Failed upstream attempts by endpoint and reason.",
                                               ("endpoint", "reason"), registry=r)
        self.circuit_open = Gauge("lanterna_gateway_circuit_open", "1 while an endpoint's circuit is open.",
                                  ("endpoint",), registry=r)

    def objective(self, model_name: str, target: str) -> ObjectiveChildren:
        key = (model_name, target)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = ObjectiveChildren(self, model_name, target)
        return c
