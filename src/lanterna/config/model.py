"""The one ``LanternaConfig`` tree (pydantic v2, ``extra="forbid"``); defaults live only here.

Each component receives only its own section. ``scheduler`` is llm-d's ``EndpointPickerConfig`` kept
verbatim (parsed by ``lanterna.config.epp``) so llm-d users can bring their YAML unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TimeoutsConfig(_Section):
    """Per-attempt and per-request deadlines, chosen to fail fast (a stalled replica costs seconds, not minutes).

    The wait for an attempt's first bytes is derived from the request: ``first_byte_floor_s`` plus the
    estimated queue (``queue_s_per_waiting`` per request waiting on the endpoint) and prefill (prompt plus
    in-flight prefill tokens at ``prefill_tokens_per_s``), capped at ``first_byte_s``. A non-streaming answer
    arrives whole, so its wait adds ``decode_s_per_token`` per requested output token (``stream_idle_s``
    when the request sets no limit). ``request_s`` is the default deadline for the whole request (None: none);
    a client's ``x-request-timeout`` header may set its own, at most ``max_request_s``."""

    # TCP connect only (nothing sent yet, so a failure is retried elsewhere). 4 s outlasts the SYN retransmits
    # at 1 s and 3 s that a burst of new connections overflowing a server's listen backlog causes.
    connect_s: float = Field(default=4.0, gt=0)
    first_byte_s: float = Field(default=30.0, gt=0)
    first_byte_floor_s: float = Field(default=5.0, gt=0)
    prefill_tokens_per_s: float = Field(default=2000.0, gt=0)
    queue_s_per_waiting: float = Field(default=0.5, ge=0)
    decode_s_per_token: float = Field(default=0.05, ge=0)
    stream_idle_s: float = Field(default=120.0, gt=0)  # longest silence allowed mid-stream
    request_s: float | None = Field(default=None, gt=0)
    max_request_s: float = Field(default=600.0, gt=0)


class RetryConfig(_Section):
    max_attempts: int = Field(default=3, ge=1, le=16)  # endpoints tried before the first byte reached the client


class CircuitBreakerConfig(_Section):
    failure_threshold: int = Field(default=5, ge=1)  # consecutive failures that open the circuit
    open_s: float = Field(default=5.0, gt=0)  # time before one half-open probe is let through


class TrafficSplitTarget(_Section):
    model: str
    weight: float = Field(default=1.0, ge=0)


class EdgeLimitsConfig(_Section):
    """Limits on what a client may send, enforced before any parsing (``gateway.server``, ``gateway.edge``)."""

    max_line_size: int = Field(default=8190, ge=256)  # request line bytes
    max_field_size: int = Field(default=8190, ge=256)  # one header line's bytes
    max_headers: int = Field(default=100, ge=8)  # header count; more -> 431
    header_timeout_s: float = Field(default=5.0, gt=0)  # first byte of a request -> end of its headers
    body_timeout_s: float = Field(default=15.0, gt=0)  # reading the whole body
    keepalive_timeout_s: float = Field(default=75.0, gt=0)  # idle keep-alive connection
    lingering_s: float = Field(default=1.0, ge=0)  # reading an unread body after the response, then close
    max_json_depth: int = Field(default=64, ge=2)  # nesting of arrays/objects
    drain_timeout_s: float = Field(default=30.0, ge=0)  # SIGTERM: wait this long for in-flight requests
    shutdown_retry_after_s: int = Field(default=5, ge=0)  # Retry-After on 503s while draining


class PDConfig(_Section):
    """Who runs the prefill of a disaggregated request (llm-d's two placements; ``routing.pd``).

    ``gateway``: the gateway sends the prefill, then the decode with the returned ``kv_transfer_params``.
    ``sidecar``: the gateway only sets ``x-prefiller-host-port`` on the decode request and the decode pod's
    sidecar (``lanterna sidecar``, llm-d's routing sidecar) runs both legs. Never both for one request."""

    placement: Literal["gateway", "sidecar"] = "gateway"


class GatewayConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    retries: RetryConfig = Field(default_factory=RetryConfig)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    objectives: dict[str, int] = Field(default_factory=dict)  # objective name -> priority (negative: sheddable)
    model_rewrites: dict[str, str] = Field(default_factory=dict)  # requested model -> served model
    traffic_split: dict[str, list[TrafficSplitTarget]] = Field(default_factory=dict)  # model -> weighted targets
    pool_name: str = "lanterna"
    seed: int = 0
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    access_log: Literal["json", "text", "off"] = "json"  # one line per request on logger lanterna.access (stdout)

    @field_validator("access_log", mode="before")
    @classmethod
    def _access_log_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false
    debug_endpoints: bool = True  # GET /debug/endpoints: gateway-side load per endpoint
    tracing: bool = False  # OpenTelemetry spans when the package is installed
    # inference_extension_plugin_duration_seconds times 1 scheduling cycle in N (the first included); 1: all
    plugin_timing_every: int = Field(default=16, ge=1)
    scheduler_reload_s: float = Field(default=1.0, ge=0)  # poll a scheduler config file for changes; 0: off
    limits: EdgeLimitsConfig = Field(default_factory=EdgeLimitsConfig)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)  # /metrics on its own listener; None: main port
    pd: PDConfig = Field(default_factory=PDConfig)
    # the client-facing server: "lean" (httptools on raw connections, gateway/lean.py) or "aiohttp"
    http_server: Literal["lean", "aiohttp"] = "lean"


class StaticEndpoint(_Section):
    address: str  # host:port
    models: list[str] = Field(default_factory=list)  # empty: discovered from /v1/models
    labels: dict[str, str] = Field(default_factory=dict)
    kv_events: str | None = None  # tcp://host:port of its KV-event publisher

    @field_validator("address")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"endpoint address must be host:port, got {v!r}")
        return v


class EndpointsConfig(_Section):
    static: list[StaticEndpoint] = Field(default_factory=list)
    scrape_interval_s: float = Field(default=0.075, gt=0)
    scrape_timeout_s: float = Field(default=1.0, gt=0)
    stale_after_s: float = Field(default=2.0, gt=0)  # metrics older than this are ignored by health
    health_interval_s: float = Field(default=1.0, gt=0)
    unhealthy_after: int = Field(default=3, ge=1)  # consecutive failed checks


TierName = Literal["gpu", "cpu", "storage"]


def _default_tier_weights() -> dict[TierName, float]:
    return {"gpu": 1.0, "cpu": 0.8, "storage": 0.4}


class KVIndexConfig(_Section):
    enabled: bool = True  # subscribe to KV events when a precise scorer is configured
    max_keys: int = Field(default=2_000_000, ge=1)
    map_capacity: int | None = Field(default=None, ge=1)  # vLLM-hash mappings per endpoint; None = max_keys
    tokenizer: str | None = None  # tokenizer dir; None = the model server's or the default
    # credit per matched block by the best tier holding it (llm-d-style defaults)
    tier_weights: dict[TierName, float] = Field(default_factory=_default_tier_weights)
    replay_endpoints: dict[str, str] = Field(default_factory=dict)  # endpoint address -> tcp:// replay ROUTER
    storage: dict[str, str] = Field(default_factory=dict)  # endpoint address -> shared-storage mount name
    # One SUB socket that every publisher connects to (llm-d's kvEventsConfig.zmqEndpoint, which the
    # precise-prefix-cache-scorer's parameters may also give); a wildcard address binds, e.g. tcp://*:5557.
    # Messages are routed by topic kv@<ip>[:<port>]@<model>. None: only per-endpoint publishers (kv_events).
    zmq_endpoint: str | None = None
    topic_filter: str = "kv@"


class FlowControlConfig(_Section):
    enabled: bool = True
    max_concurrency: int = Field(default=4096, ge=1)
    max_queue_len: int = Field(default=10_000, ge=0)
    queue_ttl_s: float = Field(default=30.0, gt=0)
    max_queue_len_per_flow: int | None = Field(default=None, ge=1)
    retry_after_s: float = Field(default=1.0, gt=0)
    ordering: Literal["fcfs", "slo-deadline"] = "fcfs"  # inside a fairness id (llm-d's ordering policies)
    # Scale-from-zero pools (``lanterna up --autoscale``, ``lanterna autoscale``): a request for one of these
    # models while no endpoint is ready waits in the queue (TTL -> 503, cap -> 429) for a replica to start,
    # instead of 503 at once; the gateway counts as one pool, so the hold is on while no endpoint is ready.
    hold_models: list[str] = Field(default_factory=list)


class ApiKeySpec(_Section):
    """One client key as stored: its hash (``lanterna auth hash-key``) and what it may do."""

    hash: str  # sha256:<hex> of the key
    tenant: str = Field(min_length=1)  # fairness id of every request made with this key
    name: str = ""  # for logs and metrics; never the key
    max_priority: int = 0  # ceiling on the objective's priority
    requests_per_s: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)  # default ceil(requests_per_s)
    tokens_per_min: float | None = Field(default=None, gt=0)  # charged prompt estimate + max_tokens at admission
    token_burst: int | None = Field(default=None, ge=1)  # default tokens_per_min
    models: list[str] | None = None  # None: every model

    @field_validator("hash")
    @classmethod
    def _hash(cls, v: str) -> str:
        from lanterna.auth.keys import normalise_hash

        return normalise_hash(v)


class AuthConfig(_Section):
    """Client and admin authentication. Off by default (open mode); even then client priority is capped."""

    enabled: bool = False  # require a valid client key on inference and model routes
    keys: list[ApiKeySpec] = Field(default_factory=list)  # inline keys (hashes only)
    keys_file: str | None = None  # YAML/JSON: {keys: [ApiKeySpec, ...]} or a list
    keys_env: str = "LANTERNA_API_KEYS"  # env var holding the same document, read when set
    secret_dir: str | None = None  # mounted Kubernetes Secret: one entry (or a keys document) per file
    reload_s: float = Field(default=5.0, ge=0)  # poll keys_file/secret_dir for changes; 0: off
    anonymous_max_priority: int = 0  # priority ceiling of requests without a key (open mode)
    admin_keys: list[str] = Field(default_factory=list)  # hashes of admin keys (/debug/*, reload, admin)
    open_admin: bool = False  # no admin keys: True serves admin routes to anyone, False answers 404
    # trust x-gateway-model-name-rewrite on client requests (set it only when a gateway in front sets the header,
    # e.g. an HTTPRoute filter, and strips clients' own): off, a client cannot redirect itself to another model
    forward_model_rewrite_header: bool = False
    upstream_api_key_env: str | None = None  # env var with the backends' own key (sent as Bearer)
    upstream_api_key_file: str | None = None  # file with the backends' own key
    rate_limit_share: int = Field(default=1, ge=1)  # gateway worker processes: each enforces rate / share

    @field_validator("admin_keys")
    @classmethod
    def _admin_hashes(cls, v: list[str]) -> list[str]:
        from lanterna.auth.keys import normalise_hash

        return [normalise_hash(h) for h in v]


class SidecarConfig(_Section):
    """``lanterna sidecar``: the decode pod's proxy that runs the prefill leg (P/D placement ``sidecar``).

    It accepts ``x-prefiller-host-port`` only for targets in ``allowed_prefillers`` plus, with
    ``allow_labelled_endpoints``, the ``endpoints.static`` entries labelled ``llm-d.ai/role: prefill``/``both``."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    decode: str = "127.0.0.1:8200"  # host:port of the local model server (vLLM behind the sidecar)
    allowed_prefillers: list[str] = Field(default_factory=list)  # host:port
    allow_labelled_endpoints: bool = True
    connect_s: float = Field(default=4.0, gt=0)
    prefill_timeout_s: float = Field(default=60.0, gt=0)  # the whole prefill leg
    request_timeout_s: float = Field(default=600.0, gt=0)  # the decode leg, to its last byte


class LanternaConfig(_Section):
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    endpoints: EndpointsConfig = Field(default_factory=EndpointsConfig)
    scheduler: dict[str, Any] | str | None = None  # EndpointPickerConfig verbatim or a path to one; None = default
    kvindex: KVIndexConfig = Field(default_factory=KVIndexConfig)
    flowcontrol: FlowControlConfig = Field(default_factory=FlowControlConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    sidecar: SidecarConfig = Field(default_factory=SidecarConfig)
