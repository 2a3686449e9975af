"""Endpoint: one model-server replica as the scheduler sees it (pure data, no I/O).

Two load signals live side by side on purpose: ``metrics`` is scraped from the server's ``/metrics``
every 50-100 ms and is stale by design; ``load`` is the gateway's own in-flight accounting, updated on
every dispatch, first token and stream end, so a burst cannot pile onto one replica between scrapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ROLE_LABEL = "llm-d.ai/role"
ROLE_PREFILL = "prefill"
ROLE_DECODE = "decode"
ROLE_BOTH = "both"

EndpointId = str


@dataclass(slots=True)
class EndpointMetrics:
    """The latest scrape of vLLM's ``/metrics``; ``scraped_at`` is monotonic seconds (-inf: never)."""

    num_running: int = 0
    num_waiting: int = 0
    kv_cache_usage: float = 0.0
    block_size: int | None = None
    num_gpu_blocks: int | None = None
    num_cpu_blocks: int | None = None
    max_lora: int = 0
    running_lora_adapters: frozenset[str] = frozenset()
    waiting_lora_adapters: frozenset[str] = frozenset()
    prefix_cache_queries: float = 0.0
    prefix_cache_hits: float = 0.0
    scraped_at: float = -math.inf

    def age_s(self, now: float) -> float:
        return now - self.scraped_at


@dataclass(slots=True)
class EndpointLoad:
    """Gateway-side accounting. Prefill tokens are released at first token, the rest at stream end."""

    in_flight_requests: int = 0
    in_flight_prefill_tokens: int = 0
    in_flight_decode_seqs: int = 0
    in_flight_kv_tokens: int = 0
    # LoRA adapter -> requests in flight here; an absent key is 0 (the entry is dropped at 0, so the dict is
    # bounded by the adapters active on the endpoint). Scraped ``running_lora_adapters`` lags by a scrape.
    in_flight_adapters: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class Endpoint:
    """A model server. ``id`` is stable (``ip:port``, plus ``#rank`` for data-parallel ranks)."""

    id: EndpointId
    address: str  # host:port to send HTTP to
    labels: dict[str, str] = field(default_factory=dict)
    models: frozenset[str] = frozenset()  # base model names and LoRA adapters it serves
    metrics: EndpointMetrics = field(default_factory=EndpointMetrics)
    load: EndpointLoad = field(default_factory=EndpointLoad)
    healthy: bool = True
    kv_events_endpoint: str | None = None  # tcp://host:port of its KV-event publisher, when known

    @property
    def role(self) -> str:
        return self.labels.get(ROLE_LABEL, ROLE_DECODE)

    def serves(self, model: str) -> bool:
        return not self.models or model in self.models
