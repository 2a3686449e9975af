"""Precise prefix-cache scorer, type ``precise-prefix-cache-scorer`` (llm-d).

score = tier-weighted consecutive matched blocks / total full blocks of the prompt, from the KV-event
index (``services.kv_index``; GPU 1.0, CPU 0.8, shared storage 0.4 per block by default). Range [0,1].
Needs ``req.token_ids`` (the gateway's tokenizer pool fills them); without tokens, without an index, or
for a prompt shorter than one block, every candidate scores 0 and ``num_without_tokens`` counts it,
so pair it with the approximate ``prefix-cache-scorer`` when tokenizers may be missing.

Parameters: llm-d's ``blockSize`` (used until events/metrics report the server's), ``indexerConfig``,
``kvEventsConfig`` (its ``zmqEndpoint``/``topicFilter`` open the gateway's shared KV-event socket, which pods'
publishers connect to: ``gateway.precise.shared_kv_endpoint``), ``tokenProcessorConfig`` (accepted; the index
reads Lanterna's ``kvindex`` config), and ``tierWeights`` {gpu, cpu, storage} (ours, informational).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from lanterna.endpoints.types import Endpoint
from lanterna.scheduler.framework.interfaces import KVIndexView, SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import SchedRequest

TYPE = "precise-prefix-cache-scorer"
STATE_KEY = "precise-prefix-cache-scorer.matched"  # req.state: endpoint id -> weighted matched blocks


class Params(PluginParams):
    block_size: int | None = Field(None, alias="blockSize", ge=1)
    indexer_config: dict[str, Any] | None = Field(None, alias="indexerConfig")
    kv_events_config: dict[str, Any] | None = Field(None, alias="kvEventsConfig")
    token_processor_config: dict[str, Any] | None = Field(None, alias="tokenProcessorConfig")
    tier_weights: dict[str, float] | None = Field(None, alias="tierWeights")


def _configured_block_size(p: Params) -> int | None:
    if p.block_size is not None:
        return p.block_size
    for cfg in (p.token_processor_config, (p.indexer_config or {}).get("tokenProcessorConfig")):
        if isinstance(cfg, dict) and isinstance(cfg.get("blockSize"), int):
            return int(cfg["blockSize"])
    return None


@dataclass(slots=True)
class PrecisePrefixCacheScorer:
    name: str
    index: KVIndexView | None
    block_size: int | None = None
    type_name: str = TYPE
    num_without_tokens: int = 0

    def score(self, req: SchedRequest, candidates: list[Endpoint]) -> dict[str, float]:
        toks = req.token_ids
        if self.index is None or toks is None:
            self.num_without_tokens += 1
            return {}
        bs = self.index.block_size_for(req.model) or self.block_size
        total = len(toks) // bs if bs else 0
        if total == 0:
            return {}
        # per-endpoint results do not depend on the other candidates, so a second profile (P/D) reuses them
        known: dict[str, float] = req.state.setdefault(STATE_KEY, {})
        missing = [e.id for e in candidates if e.id not in known]
        if missing:
            known.update(self.index.match(req.model, req.lora, toks, missing))
        return {e.id: known[e.id] / total for e in candidates}


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> PrecisePrefixCacheScorer:
    p = parse_params(Params, TYPE, name, params)
    return PrecisePrefixCacheScorer(name=name, index=services.kv_index, block_size=_configured_block_size(p))
