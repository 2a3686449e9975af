"""Precise prefix routing wiring: KV-event index, subscribers and tokenization, when a config asks.

Enabled when the scheduler config uses ``precise-prefix-cache-scorer`` and ``kvindex.enabled``. The
index (``lanterna.kvindex.KVIndex``) is built before the scheduler so the scorer can read it; the
subscriber manager connects one ZMQ SUB per endpoint that announces a KV-event publisher; the tokenizer
pool turns prompts into token ids off the event loop (local tokenizer from ``kvindex.tokenizer``, else
the model server's ``POST /tokenize``). Requests without tokens fall back to the other scorers.

From config (``kvindex``): capacity and per-endpoint map bound, tier weights, each endpoint's replay
ROUTER and shared-storage mount. The block size comes from the events, or before any event from the
scraped ``vllm:cache_config_info`` (``metrics.block_size``), so the first requests already score. The
``lanterna_kvindex_*`` collector is registered on the gateway's Prometheus registry.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson

from lanterna.config.model import LanternaConfig
from lanterna.endpoints.types import Endpoint

if TYPE_CHECKING:
    from lanterna.gateway.app import Gateway
    from lanterna.gateway.request import RoutingFields
    from lanterna.scheduler.framework.types import SchedRequest

log = logging.getLogger(__name__)

PRECISE_TYPE = "precise-prefix-cache-scorer"
_collectors: dict[int, Any] = {}  # id(gateway) -> its registered KVIndexCollector (unregistered at stop)
DEFAULT_TOKENIZER = "default"  # kvindex.tokenizer value meaning Lanterna's packaged tokenizer (what sims use)


def uses_precise(epp: Any) -> bool:
    return any(getattr(p, "type", None) == PRECISE_TYPE for p in getattr(epp, "plugins", ()))


def make_kv_index(cfg: LanternaConfig, epp: Any) -> Any | None:
    if not (cfg.kvindex.enabled and uses_precise(epp)):
        return None
    from lanterna.kvindex.index import KVIndex
    from lanterna.kvindex.match import TierWeights

    k = cfg.kvindex
    return KVIndex(capacity=k.max_keys, weights=TierWeights(**k.tier_weights), map_capacity=k.map_capacity)


def _base_model(gw: Gateway, ep: Endpoint) -> str | None:
    bases = sorted(m for m in ep.models if gw.store.base_model_of(m) is None)
    return bases[0] if bases else None


async def subscribe(gw: Gateway, ep: Endpoint) -> None:
    model = _base_model(gw, ep)
    if gw.kv_events is None or not ep.kv_events_endpoint or model is None:
        return
    k = gw.cfg.kvindex
    replay = k.replay_endpoints.get(ep.address) or k.replay_endpoints.get(ep.id)
    storage = k.storage.get(ep.address) or k.storage.get(ep.id)
    await gw.kv_events.add_endpoint(  # type: ignore[attr-defined]
        ep.id, ep.kv_events_endpoint, model, replay, storage=storage
    )
    if ep.metrics.block_size:
        gw.kv_index.set_block_size(model, ep.metrics.block_size)  # type: ignore[attr-defined]


def sync_block_size(gw: Gateway, model: str) -> int | None:
    """Before the first event of ``model``, take its block size from the scraped ``cache_config_info``."""
    index: Any = gw.kv_index
    if index is None:
        return None
    bs: int | None = index.block_size_for(model)
    if bs is None:
        for ep in gw.store.all():
            if ep.metrics.block_size and ep.serves(model):
                index.set_block_size(model, ep.metrics.block_size)
                return int(ep.metrics.block_size)
    return bs


async def start_precise(gw: Gateway) -> None:
    """Subscribe to every endpoint's publisher and set up tokenization (no-op without a KV index)."""
    if gw.kv_index is None:
        return
    from lanterna.kvindex.remote_tokenize import http_tokenize
    from lanterna.kvindex.tokenization import TokenizerPool
    from lanterna.kvindex.zmq_source import KVEventSubscriberManager

    gw.kv_events = KVEventSubscriberManager(gw.kv_index)  # type: ignore[arg-type]
    for ep in gw.store.all():
        await subscribe(gw, ep)
    tok = gw.cfg.kvindex.tokenizer
    models = {m for ep in gw.store.all() for m in ep.models if gw.store.base_model_of(m) is None}
    dirs = {m: (None if tok == DEFAULT_TOKENIZER else tok) for m in models} if tok else {}

    def base_url_for(model: str) -> str | None:
        cands = gw.store.candidates(model)
        return f"http://{cands[0].address}" if cands else None

    assert gw.session is not None
    # token_array: ids become array('I') in the worker thread, so scoring hashes them without converting
    gw.tokenizer = TokenizerPool(dirs, remote=http_tokenize(gw.session, base_url_for), clock=gw.clock.now,
                                 token_array=True)
    from lanterna.kvindex.metrics import KVIndexCollector

    collector = KVIndexCollector(gw.kv_events.applier, gw.tokenizer)
    gw.metrics.registry.register(collector)
    _collectors[id(gw)] = collector
    log.info("precise_routing_enabled", extra={"subscribed": gw.kv_events.endpoints, "local_tokenizer": bool(dirs)})


async def stop_precise(gw: Gateway) -> None:
    collector = _collectors.pop(id(gw), None)
    if collector is not None:
        gw.metrics.registry.unregister(collector)
    if gw.kv_events is not None:
        await gw.kv_events.close()  # type: ignore[attr-defined]
    if gw.tokenizer is not None:
        gw.tokenizer.close()  # type: ignore[attr-defined]


async def tokenize(gw: Gateway, sreq: SchedRequest, fields: RoutingFields) -> None:
    """Fill ``sreq.token_ids`` for the precise scorer (None stays None: the scorer then abstains)."""
    pool = gw.tokenizer
    if pool is None:
        return
    sync_block_size(gw, sreq.model)
    if sreq.token_ids is not None:
        return
    if sreq.kind == "chat":
        sreq.token_ids = await pool.tokenize_chat(sreq.model, orjson.loads(bytes(fields.messages)))  # type: ignore[attr-defined]
    else:
        sreq.token_ids = await pool.tokenize_prompt(sreq.model, sreq.prompt_text)  # type: ignore[attr-defined]
