"""Benchmark configuration (pydantic v2, ``extra="forbid"``), validated in full before any load is sent.

A config names one workload, one load shape and exactly one target: an OpenAI endpoint over HTTP
(our gateway, a single vLLM, a peer router) or the in-process virtual-time cluster. A mistake (unknown
key, negative rate, a stage with neither rate nor concurrency, a missing trace file) is a
``ConfigError`` whose message names the field, so the run fails before the first request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lanterna.errors import ConfigError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RandomWorkload(_Model):
    """Independent prompts of ``input_len`` tokens (+- ``range_ratio``), ``output_len`` output tokens."""

    type: Literal["random"] = "random"
    input_len: int = Field(1000, ge=1)
    output_len: int = Field(1000, ge=1)
    range_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    num_prompts: int = Field(1000, ge=1)


class SharedPrefixWorkload(_Model):
    """G groups x P prompts: system prompt S tokens shared per group, question Q tokens, output O tokens."""

    type: Literal["shared-prefix"] = "shared-prefix"
    num_groups: int = Field(150, ge=1)
    prompts_per_group: int = Field(5, ge=1)
    system_len: int = Field(6000, ge=0)
    question_len: int = Field(1200, ge=1)
    output_len: int = Field(1000, ge=1)


class MultiTurnWorkload(_Model):
    """U users x R rounds; each round appends the question and the previous answer to the history."""

    type: Literal["multi-turn"] = "multi-turn"
    num_users: int = Field(32, ge=1)
    num_rounds: int = Field(5, ge=1)
    system_len: int = Field(1000, ge=0)
    question_len: int = Field(200, ge=1)
    output_len: int = Field(200, ge=1)


class TraceWorkload(_Model):
    """Mooncake JSONL replay: ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids``."""

    type: Literal["trace"] = "trace"
    path: Path
    block_tokens: int = Field(512, ge=1)
    max_requests: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _exists(self) -> TraceWorkload:
        if not self.path.is_file():
            raise ValueError(f"trace file not found: {self.path}")
        return self


Workload = Annotated[
    RandomWorkload | SharedPrefixWorkload | MultiTurnWorkload | TraceWorkload, Field(discriminator="type")
]


class Stage(_Model):
    """One stage: a rate (req/s) or a concurrency, for a duration or a number of requests."""

    rate: float | None = Field(None, gt=0)
    concurrency: int | None = Field(None, ge=1)
    duration_s: float | None = Field(None, gt=0)
    num_requests: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _shape(self) -> Stage:
        if (self.rate is None) == (self.concurrency is None):
            raise ValueError("a stage needs exactly one of 'rate' or 'concurrency'")
        if self.duration_s is None and self.num_requests is None:
            raise ValueError("a stage needs 'duration_s' or 'num_requests'")
        return self


class Sweep(_Model):
    """Automatic sweep: rates from ``start_rate`` up by ``factor`` until saturation or ``max_rate``."""

    start_rate: float = Field(1.0, gt=0)
    max_rate: float = Field(64.0, gt=0)
    factor: float = Field(2.0, gt=1.0)
    stage_duration_s: float = Field(30.0, gt=0)
    # saturated when achieved output throughput grows less than this between stages, or TTFT p50 exceeds it
    min_gain: float = Field(0.05, ge=0)
    max_ttft_p50_s: float | None = Field(None, gt=0)


class LoadConfig(_Model):
    """Arrival process and stages. ``warmup`` runs first and is excluded from results."""

    type: Literal["constant", "poisson", "concurrency", "trace"] = "poisson"
    stages: list[Stage] = Field(default_factory=list)
    warmup: Stage | None = None
    sweep: Sweep | None = None
    max_in_flight: int = Field(10_000, ge=1)  # bound on concurrently open requests (memory, sockets)

    @model_validator(mode="after")
    def _stages(self) -> LoadConfig:
        if self.type == "trace":
            return self
        if not self.stages and self.sweep is None:
            raise ValueError("load needs 'stages' or 'sweep'")
        for i, st in enumerate([*self.stages, *([self.warmup] if self.warmup else [])]):
            if self.type == "concurrency" and st.concurrency is None:
                raise ValueError(f"stage {i}: load type 'concurrency' needs 'concurrency'")
            if self.type != "concurrency" and st.rate is None:
                raise ValueError(f"stage {i}: load type '{self.type}' needs 'rate'")
        return self


class HttpTarget(_Model):
    """An OpenAI-compatible server."""

    url: str = Field(pattern=r"^https?://")
    model: str
    api: Literal["completions", "chat"] = "completions"
    stream: bool = True
    timeout_s: float = Field(600.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    ignore_eos: bool = True
    # tokenizer.json (file or model dir) used to render token-id prompts as text, ideally the target model's own,
    # so prompt lengths in tokens match the config; default: the bundled byte-level BPE
    tokenizer: Path | None = None


class TrafficClass(_Model):
    """A share of the virtual cluster's requests with one flow-control priority (negative = sheddable).

    Each request draws its class by ``weight`` from a seeded RNG; the class name is its fairness id. ``slo_ttft_ms``
    / ``slo_tpot_ms`` are the class's ``x-slo-ttft-ms`` / ``x-slo-tpot-ms`` headers (SLO-aware routing)."""

    name: str = Field(min_length=1)
    priority: int = 0
    weight: float = Field(1.0, gt=0)
    slo_ttft_ms: float | None = Field(None, gt=0)
    slo_tpot_ms: float | None = Field(None, gt=0)


class VirtualFlowControl(_Model):
    """The gateway's flow control (``lanterna.flowcontrol``) in front of the virtual cluster: admission with
    priority bands, fairness, queue TTL and shedding while the pool is saturated. Limits as the gateway's."""

    enabled: bool = True
    max_concurrency: int = Field(4096, ge=1)
    max_queue_len: int = Field(10_000, ge=0)
    queue_ttl_s: float = Field(30.0, gt=0)
    max_queue_len_per_flow: int | None = Field(None, ge=1)
    ordering: Literal["fcfs", "slo-deadline"] = "fcfs"  # inside a fairness id
    classes: list[TrafficClass] = Field(default_factory=list)  # empty: one class, priority 0

    @model_validator(mode="after")
    def _unique(self) -> VirtualFlowControl:
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError("traffic class names must be unique")
        return self


class TierTarget(_Model):
    """KV offload tiers of every replica (vLLM's OffloadingConnector / TieringOffloadingSpec, simulated).

    Sizes in GiB of KV per replica (vLLM's ``cpu_bytes_to_use`` / ``--kv-offloading-size``, over all TP
    ranks) or in GPU-sized blocks (blocks win). ``shared_storage``: one storage tier all replicas share
    (vLLM's fs tier on a shared mount), sized for the whole cluster; else one private tier per replica."""

    cpu_gib: float | None = Field(None, ge=0)
    cpu_blocks: int | None = Field(None, ge=0)
    storage_gib: float | None = Field(None, ge=0)
    storage_blocks: int | None = Field(None, ge=0)
    shared_storage: bool = True
    cpu_bandwidth_gbps: float = Field(25.0, gt=0)  # GB/s (1e9 bytes/s), CPU -> GPU per replica
    storage_bandwidth_gbps: float = Field(2.0, gt=0)  # storage -> GPU per replica


class LoraTarget(_Model):
    """LoRA traffic in the virtual cluster: each request names one of ``num_adapters`` adapters drawn by a Zipf
    law (weight 1/rank^zipf_s; a session or prompt group keeps one adapter), or the base model with probability
    ``1 - share``. Engines run vLLM's ``--max-loras`` slots; a load costs ``load_s`` (default: a rank-``rank``
    adapter of the profile's shape at ``bandwidth_gbps``, ``sim.lora_slots.profile_load_s``)."""

    num_adapters: int = Field(24, ge=1)
    zipf_s: float = Field(1.0, ge=0)
    share: float = Field(1.0, ge=0, le=1)
    max_loras: int = Field(4, ge=1)
    rank: int = Field(16, ge=1)
    load_s: float | None = Field(None, ge=0)
    bandwidth_gbps: float = Field(2.0, gt=0)


class VirtualPD(_Model):
    """P/D topology of the virtual cluster (``cluster.virtual_pd``): the first ``prefill_replicas`` of
    ``replicas`` prefill, the rest decode; the KV moves over ``link`` (sim/kv_link.py defaults per kind)."""

    prefill_replicas: int = Field(1, ge=1)
    threshold: int = Field(256, ge=0)  # prefix-based-pd-decider nonCachedTokens (when policy is "pd")
    link: Literal["nvlink", "rdma", "tcp"] = "rdma"
    link_bandwidth_gbps: float | None = Field(None, gt=0)
    link_setup_ms: float | None = Field(None, ge=0)


class VirtualAutoscale(_Model):
    """The autoscaler in the virtual cluster's loop (``lanterna.autoscale``): every ``interval_s`` of virtual time
    it reads the scraped metrics and the gateway's demand and adds replicas (ready after a cold start) or drains
    them. Needs flow control (requests wait there at zero replicas); a default one is used when none is set.

    Cold start = ``startup_overhead_s`` + model weight bytes (from the profile, all TP shards) /
    ``storage_bandwidth_bps``, unless ``cold_start_s`` is given. The model-based and token-capacity policies size a
    replica with ``sim.timing`` for the workload's mean shape (``prompt_tokens``/``output_tokens``/
    ``cached_fraction``; derived from the workload when not given) within ``ttft_s``/``itl_s``.
    """

    policy: Literal["fixed", "saturation", "token-capacity", "model-based"] = "saturation"
    interval_s: float = Field(15.0, gt=0)
    min_replicas: int = Field(0, ge=0)
    max_replicas: int = Field(16, ge=1, le=1024)
    initial_replicas: int | None = Field(None, ge=0)  # None: cluster.replicas
    cold_start_s: float | None = Field(None, ge=0)
    startup_overhead_s: float = Field(30.0, ge=0)
    storage_bandwidth_bps: float = Field(2e9, gt=0)
    cost_per_hour: float = Field(10.0, ge=0)  # per replica (all its GPUs)
    scale_to_zero: bool = False
    retention_s: float = Field(600.0, gt=0)
    scale_up_window_s: float = Field(0.0, ge=0)
    scale_down_window_s: float = Field(300.0, ge=0)
    period_s: float = Field(15.0, gt=0)
    scale_up_pods: int = Field(4, ge=1)
    scale_down_pods: int = Field(1, ge=1)
    scale_down_delay_after_up_s: float = Field(60.0, ge=0)
    ttft_s: float = Field(2.0, gt=0)
    itl_s: float = Field(0.05, gt=0)
    prompt_tokens: float | None = Field(None, gt=0)
    output_tokens: float | None = Field(None, gt=0)
    cached_fraction: float | None = Field(None, ge=0, lt=1)
    utilization: float = Field(0.8, gt=0, le=1)  # token-capacity: plan for this share of capacity
    headroom: float = Field(0.9, gt=0, le=1)  # model-based: plan for this share of the sustainable rate
    kv_cache_threshold: float = Field(0.80, gt=0, le=1)
    queue_length_threshold: float = Field(5.0, ge=0)
    kv_spare_trigger: float = Field(0.10, ge=0, le=1)
    queue_spare_trigger: float = Field(3.0, ge=0)


class ClusterTarget(_Model):
    """The virtual-time cluster: N simulated engines + the real scheduler and index."""

    replicas: int = Field(8, ge=1, le=1024)
    profile: str = "qwen3-32b-tp2-h100"
    policy: str = "round-robin"  # a named policy or a path to an EndpointPickerConfig YAML
    scrape_interval_s: float = Field(0.05, gt=0)
    model: str = "sim-model"
    block_size: int = Field(16, ge=1)
    num_gpu_blocks: int | None = Field(None, ge=1)
    max_num_seqs: int = Field(256, ge=1)
    max_num_batched_tokens: int = Field(8192, ge=1)
    precise_tokens: bool = True  # give the scheduler token ids (precise); False = text only (approximate)
    # seed of the host's step-scatter draws (the profile's ``step_cv``); None: the scenario's seed. Another value
    # replays the same trace (arrivals, prompts, routing ties) on another draw of the host's noise
    scatter_seed: int | None = None
    flow_control: VirtualFlowControl | None = None  # None: every arrival goes straight to the scheduler
    tiers: TierTarget | None = None  # KV offload tiers (None: GPU only)
    lora: LoraTarget | None = None  # LoRA adapters (None: every request uses the base model)
    pd: VirtualPD | None = None  # prefill/decode disaggregation; None: every replica serves both phases
    autoscale: VirtualAutoscale | None = None  # None: ``replicas`` fixed for the whole run

    @model_validator(mode="after")
    def _autoscale_alone(self) -> ClusterTarget:
        if self.autoscale is not None and self.pd is not None:
            raise ValueError("autoscale with pd is not supported yet (one pool of replicas only)")
        return self


class Slo(_Model):
    ttft_s: float | None = Field(None, gt=0)
    tpot_s: float | None = Field(None, gt=0)
    e2e_s: float | None = Field(None, gt=0)


class BenchConfig(_Model):
    name: str = "bench"
    seed: int = 0
    workload: Workload = Field(default_factory=lambda: SharedPrefixWorkload.model_validate({}))
    load: LoadConfig
    target: HttpTarget | None = None
    cluster: ClusterTarget | None = None
    slo: Slo = Field(default_factory=lambda: Slo.model_validate({}))
    output_dir: Path = Path("bench-results")
    keep_records: int = Field(100_000, ge=0)  # per-request records kept in the report (bounded)

    @model_validator(mode="after")
    def _one_target(self) -> BenchConfig:
        if (self.target is None) == (self.cluster is None):
            raise ValueError("give exactly one of 'target' (HTTP endpoint) or 'cluster' (virtual-time)")
        if self.load.type == "trace" and not isinstance(self.workload, TraceWorkload):
            raise ValueError("load type 'trace' needs a 'trace' workload")
        return self


def _format_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid benchmark config {source}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<dict>") -> BenchConfig:
    """Validate a mapping; raise ``ConfigError`` with one line per problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid benchmark config {source}: top level must be a mapping")
    try:
        return BenchConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> BenchConfig:
    """Read YAML, apply dotted ``overrides`` (``{"cluster.policy": "precise"}``), validate."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read benchmark config {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"benchmark config {p} is not valid YAML: {exc}") from None
    if isinstance(data, dict):
        _resolve_paths(data, p.parent)
        for key, value in (overrides or {}).items():
            set_dotted(data, key, value)
    return parse_config(data, str(p))


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative trace and policy paths are relative to the config file."""
    wl = data.get("workload")
    if isinstance(wl, dict) and isinstance(wl.get("path"), str) and not Path(wl["path"]).is_absolute():
        wl["path"] = str(base / wl["path"])
    tg = data.get("target")
    if isinstance(tg, dict) and isinstance(tg.get("tokenizer"), str) and not Path(tg["tokenizer"]).is_absolute():
        tg["tokenizer"] = str(base / tg["tokenizer"])
    cl = data.get("cluster")
    if isinstance(cl, dict) and isinstance(cl.get("policy"), str) and cl["policy"].endswith((".yaml", ".yml")):
        if not Path(cl["policy"]).is_absolute():
            cl["policy"] = str(base / cl["policy"])


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating levels as needed."""
    parts = key.split(".")
    cur = data
    for part in parts[:-1]:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[part] = nxt
        cur = nxt
    cur[parts[-1]] = value
