"""The llm-d benchmark report v0.2 shape, as pydantic models (``extra="forbid"``) to validate what we write.

Only the parts Lanterna fills are modelled strictly: ``version``, ``run``, ``scenario.stack``,
``scenario.load`` and ``results.request_performance.aggregate``. Key spellings and unit strings are
llm-d's (note the capitalised ``Native`` key and lower-case unit names such as ``ms`` and ``count``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

VERSION = "0.2"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Statistics(_Strict):
    units: Literal["count", "percent", "fraction", "ms", "s", "ms/token", "s/token", "token/s", "qps"]
    mean: float
    stddev: float | None = None
    min: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None


class ComponentMetadata(_Strict):
    kind: str
    schema_version: str = "0.0.1"
    label: str
    cfg_id: str
    description: str | None = None


class ComponentNative(_Strict):
    args: dict[str, Any] | None = None
    envars: dict[str, Any] | None = None
    config: Any | None = None


class Component(_Strict):
    metadata: ComponentMetadata
    standardized: dict[str, Any]
    Native: ComponentNative


class SequenceLength(_Strict):
    distribution: Literal["fixed", "gaussian", "random", "other"]
    value: float
    std_dev: float | None = None
    min: int | None = None
    max: int | None = None


class LoadPrefix(_Strict):
    prefix_len: SequenceLength
    num_groups: int
    num_users_per_group: int
    num_prefixes: int


class MultiTurn(_Strict):
    enabled: bool = True
    max_turns: SequenceLength | None = None


class LoadStandardized(_Strict):
    tool: str
    tool_version: str
    stage: int = 1
    input_seq_len: SequenceLength
    output_seq_len: SequenceLength | None = None
    prefix: LoadPrefix | None = None
    multi_turn: MultiTurn | None = None
    rate_qps: float | None = None
    concurrency: int | None = None


class LoadMetadata(_Strict):
    schema_version: str = "0.0.1"
    cfg_id: str | None = None
    description: str | None = None


class Load(_Strict):
    metadata: LoadMetadata
    standardized: LoadStandardized
    Native: ComponentNative


class AggregateRequests(_Strict):
    total: int
    failures: int | None = None
    incomplete: int | None = None
    input_length: Statistics | None = None
    output_length: Statistics | None = None


class AggregateLatency(_Strict):
    time_to_first_token: Statistics | None = None
    normalized_time_per_output_token: Statistics | None = None
    time_per_output_token: Statistics | None = None
    inter_token_latency: Statistics | None = None
    request_latency: Statistics | None = None


class AggregateThroughput(_Strict):
    input_token_rate: Statistics | None = None
    output_token_rate: Statistics | None = None
    total_token_rate: Statistics | None = None
    requests_rate: Statistics | None = None


class Aggregate(_Strict):
    requests: AggregateRequests | None = None
    latency: AggregateLatency | None = None
    throughput: AggregateThroughput | None = None


class RequestPerformance(_Strict):
    aggregate: Aggregate | None = None
    time_series: dict[str, Any] | None = None


class Results(_Strict):
    request_performance: RequestPerformance | None = None
    observability: dict[str, Any] | None = None
    profiling: Any | None = None


class RunTime(_Strict):
    start: str | None = None
    end: str | None = None
    duration: str | None = None


class Run(_Strict):
    uid: str | None = None
    eid: str | None = None
    cid: str | None = None
    time: RunTime | None = None
    user: str | None = None


class Scenario(_Strict):
    stack: list[Component] | None = None
    load: Load | None = None


class BenchmarkReportV02(_Strict):
    version: Literal["0.2"] = "0.2"
    run: Run
    scenario: Scenario | None = None
    results: Results
