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

import zmq

from lanterna.config.epp import EppConfig
from lanterna.config.model import LanternaConfig
from lanterna.errors import ConfigError
from lanterna.gateway.reload import PRECISE_TYPE, uses_precise
from lanterna.gateway.state import Gateway
from lanterna.kvindex.index import KVIndex

log = logging.getLogger(__name__)

DEFAULT_TOKENIZER = "default"  # kvindex.tokenizer value meaning Lanterna's packaged tokenizer (what sims use)

__all__ = ["DEFAULT_TOKENIZER", "PRECISE_TYPE", "make_kv_index", "shared_kv_endpoint", "start_precise", "stop_precise",
           "uses_precise"]


def make_kv_index(cfg: LanternaConfig, epp: EppConfig) -> KVIndex | None:
    if not (cfg.kvindex.enabled and uses_precise(epp)):
        return None
    from lanterna.kvindex.match import TierWeights

    k = cfg.kvindex
    return KVIndex(capacity=k.max_keys, weights=TierWeights(**k.tier_weights), map_capacity=k.map_capacity)


def shared_kv_endpoint(cfg: LanternaConfig) -> tuple[str | None, str]:
    """The shared KV-event socket address and topic filter: ``kvindex.zmq_endpoint``, else llm-d's
    ``kvEventsConfig.zmqEndpoint`` / ``topicFilter`` in the precise scorer's parameters."""
    k = cfg.kvindex
    if k.zmq_endpoint:
        return k.zmq_endpoint, k.topic_filter
    from lanterna.scheduler import default_epp_config, load_epp_config

    epp = load_epp_config(cfg.scheduler) if cfg.scheduler else default_epp_config()
    for plugin in epp.plugins:
        if plugin.type == PRECISE_TYPE and plugin.parameters:
            ev = plugin.parameters.get("kvEventsConfig")
            if not isinstance(ev, dict):
                ev = (plugin.parameters.get("indexerConfig") or {}).get("kvEventsConfig")
            if isinstance(ev, dict) and isinstance(ev.get("zmqEndpoint"), str):
                return ev["zmqEndpoint"], str(ev.get("topicFilter") or k.topic_filter)
    return None, k.topic_filter


async def start_precise(gw: Gateway) -> None:
    """Subscribe to every endpoint's publisher and set up tokenization (no-op without a KV index)."""
    if gw.kv_index is None:
        return
    from lanterna.kvindex.metrics import KVIndexCollector
    from lanterna.kvindex.remote_tokenize import http_tokenize
    from lanterna.kvindex.tokenization import TokenizerPool
    from lanterna.kvindex.zmq_source import KVEventSubscriberManager

    gw.kv_events = KVEventSubscriberManager(gw.kv_index)
    shared, topics = shared_kv_endpoint(gw.cfg)
    if shared:
        try:
            gw.kv_events.listen(shared, topics)
        except zmq.ZMQError as exc:
            raise ConfigError(f"kvindex.zmq_endpoint {shared}: {exc}") from None
        log.info("kv_events_shared_socket", extra={"address": gw.kv_events.shared_address})
    for ep in gw.store.all():
        await gw.subscribe(ep)
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
    gw.kv_collector = KVIndexCollector(gw.kv_events.applier, gw.tokenizer)
    gw.metrics.registry.register(gw.kv_collector)
    log.info("precise_routing_enabled", extra={"subscribed": gw.kv_events.endpoints, "local_tokenizer": bool(dirs)})


async def stop_precise(gw: Gateway) -> None:
    collector, gw.kv_collector = gw.kv_collector, None
    if collector is not None:
        gw.metrics.registry.unregister(collector)
    if gw.kv_events is not None:
        await gw.kv_events.close()
    if gw.tokenizer is not None:
        gw.tokenizer.close()
