"""Engine boundary types: what a driver (HTTP server or virtual-time cluster) feeds and gets back.

The engine is pure: the driver adds requests, calls ``Engine.step(now)`` whenever the engine has
work, waits ``StepOutput.duration_s`` (real or virtual), then delivers the step's tokens at
``now + duration_s``. KV events produced in a step are published after it, as vLLM does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lanterna.protocol.kv_events import KVEvent

FinishReason = Literal["stop", "length", "abort", "error"]


@dataclass(slots=True)
class RemotePrefill:
    """Decode side of P/D: the KV arrives from a prefiller; the engine charges a transfer time."""

    remote_engine_id: str | None = None
    remote_block_ids: list[int] | None = None
    remote_host: str | None = None
    remote_port: int | None = None


@dataclass(slots=True)
class EngineRequest:
    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    arrival_time: float
    lora_name: str | None = None
    cache_salt: str | None = None
    min_tokens: int = 0
    ignore_eos: bool = True
    eos_token_id: int | None = None
    seed: int | None = None
    remote_prefill: RemotePrefill | None = None  # skip prefill, pay KV transfer
    do_remote_decode: bool = False  # prefill side of P/D: keep blocks for the decoder to pull
    priority: int = 0


@dataclass(slots=True)
class RequestTokens:
    """New tokens for one request from one step; ``finish_reason`` set on its last step."""

    request_id: str
    token_ids: list[int]
    finish_reason: FinishReason | None = None
    num_cached_tokens: int = 0  # prefix-cache hit at first scheduling (whole blocks)
    first_token: bool = False
    num_preemptions: int = 0


@dataclass(slots=True)
class StepOutput:
    duration_s: float
    outputs: list[RequestTokens] = field(default_factory=list)
    kv_events: list[KVEvent] = field(default_factory=list)
    num_prefill_tokens: int = 0
    num_decode_tokens: int = 0
    num_preemptions: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
