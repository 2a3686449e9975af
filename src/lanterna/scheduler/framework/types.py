"""Scheduler data types shared by the framework, its plugins and its callers (gateway, virtual cluster).

The calling protocol (llm-d's): the caller builds a ``SchedRequest`` and calls
``Scheduler.schedule(req, candidates)`` once per request. Data producers fill ``req.state``; the
profile handler picks profiles; each profile runs filters -> scorers (clamped to [0,1], weighted,
summed) -> picker; the handler turns profile results into a ``SchedulingResult``. After the caller
commits to the pick it calls ``Scheduler.pre_request(req, result)`` (index and load bookkeeping) and,
when the response ends, ``Scheduler.response_complete(req, result, endpoint)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lanterna.endpoints.types import Endpoint

ApiKind = Literal["completions", "chat"]


@dataclass(slots=True)
class SchedRequest:
    """What the scheduler knows about one request. ``prompt_text`` is the prompt (completions) or the
    rendered/serialised messages (chat) used by the approximate prefix index; ``token_ids`` is filled
    when a tokenizer is available (precise routing). ``state`` is the per-request cycle state that
    plugins share (keys are plugin-owned constants)."""

    request_id: str
    model: str
    prompt_text: str = ""
    kind: ApiKind = "completions"
    headers: Mapping[str, str] = field(default_factory=dict)
    lora: str | None = None
    priority: int = 0
    fairness_id: str = "default"
    session_token: str | None = None
    max_tokens: int | None = None
    token_ids: list[int] | None = None
    cache_salt: str | None = None
    # SLOs from ``x-slo-ttft-ms`` / ``x-slo-tpot-ms`` (seconds) and when the gateway received the request (its
    # clock): the TTFT budget left at scheduling time is ``slo_ttft_s - (now - received_at)``.
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    received_at: float | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def num_prompt_tokens_estimate(self) -> int:
        """Token count when tokenized, else ~4 characters per token."""
        if self.token_ids is not None:
            return len(self.token_ids)
        return max(1, len(self.prompt_text) // 4)


@dataclass(frozen=True, slots=True)
class ScoredEndpoint:
    endpoint: Endpoint
    score: float


@dataclass(slots=True)
class ProfileResult:
    """One profile's outcome: ``targets`` ordered best first (primary + fallbacks)."""

    targets: list[Endpoint]
    scores: dict[str, float] = field(default_factory=dict)  # endpoint id -> weighted total

    @property
    def primary(self) -> Endpoint | None:
        return self.targets[0] if self.targets else None


@dataclass(slots=True)
class SchedulingResult:
    """Per-profile results and the name of the profile whose target serves the request."""

    profile_results: dict[str, ProfileResult]
    primary_profile: str

    @property
    def primary(self) -> ProfileResult:
        return self.profile_results[self.primary_profile]

    @property
    def targets(self) -> list[Endpoint]:
        return self.primary.targets

    def prefill(self) -> Endpoint | None:
        """The prefill endpoint picked by a P/D profile handler, if any."""
        res = self.profile_results.get("prefill")
        return res.primary if res is not None and self.primary_profile != "prefill" else None


# --- shared cycle-state entries (added by the scheduler framework) ---------------------------------------

STATE_PREFIX_APPROX = "lanterna/prefix-match/approx"
"""``req.state`` key: ``PrefixMatch`` from the approximate text index (written by ``prefix-cache-scorer``)."""

STATE_PREFIX_PRECISE = "lanterna/prefix-match/precise"
"""``req.state`` key: ``PrefixMatch`` from the precise KV-event index (token blocks, tier-weighted)."""


@dataclass(slots=True)
class PrefixMatch:
    """Per-endpoint prefix-cache match of one request, computed once per scheduling cycle.

    ``matched`` maps endpoint id -> (tier-weighted) count of consecutive blocks matched from the first
    block; endpoints absent from it matched nothing. ``block_size_tokens`` converts blocks to tokens."""

    total_blocks: int
    block_size_tokens: int
    matched: dict[str, float] = field(default_factory=dict)

    def ratio(self, endpoint_id: str) -> float:
        if self.total_blocks <= 0:
            return 0.0
        return min(1.0, self.matched.get(endpoint_id, 0.0) / self.total_blocks)

    def cached_tokens(self, endpoint_id: str) -> float:
        return self.matched.get(endpoint_id, 0.0) * self.block_size_tokens

    @property
    def any_hit(self) -> bool:
        return any(v > 0 for v in self.matched.values())
