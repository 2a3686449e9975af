"""Prometheus view of the KV index, its event stream and the tokenizer pool (adapter).

A custom collector reads the pure counters at scrape time, so the hot paths only bump plain ints.
Events/s and blocks/s are ``rate()`` of the ``_total`` counters; lag is now minus the newest batch
timestamp (vLLM's wall clock) per endpoint.

Two name sets, both always exported: ``lanterna_kvindex_*`` (the full picture: sequence gaps, replays,
malformed input, per-endpoint blocks and lag; our dashboards and tests read them) and the llm-d router's
``llm_d_epp_kv_cache_*`` (so llm-d's dashboards and alerts work unchanged). They are not aliases: llm-d's
``evictions`` counts every block leaving the index (BlockRemoved + LRU bound), and ``lookup_hits`` /
``max_pod_hit_count`` sum the best endpoint's (tier-weighted) matched blocks per lookup, as llm-d does.
llm-d's ``lookup_latency_seconds`` is not exported: the pure index reads no clock; the precise scorer's
``inference_extension_plugin_duration_seconds`` series covers lookup time.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from lanterna.kvindex.apply import EventApplier
from lanterna.kvindex.tokenization import TokenizerPool
from lanterna.protocol import metrics_names as mn

PREFIX = "lanterna_kvindex_"


class KVIndexCollector(Collector):
    """Register with ``registry.register(KVIndexCollector(applier, pool))``."""

    def __init__(self, applier: EventApplier, pool: TokenizerPool | None = None) -> None:
        self._ap = applier
        self._pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        ix, ac = self._ap.index, self._ap.counters
        ic = ix.counters
        yield GaugeMetricFamily(PREFIX + "keys", "Block keys held (hard bound: capacity)", value=len(ix))
        yield GaugeMetricFamily(PREFIX + "capacity_keys", "Maximum block keys held", value=ix.capacity)
        blocks = GaugeMetricFamily(PREFIX + "endpoint_blocks", "Blocks an endpoint holds, any tier", labels=["endpoint"])
        lag = GaugeMetricFamily(PREFIX + "lag_seconds", "Now minus the newest applied batch timestamp", labels=["endpoint"])
        seq = GaugeMetricFamily(PREFIX + "last_seq", "Newest applied sequence number", labels=["endpoint"])
        for eid, st in self._ap.streams.items():
            blocks.add_metric([eid], ix.num_blocks(eid))
            lag.add_metric([eid], st.lag_s)
            seq.add_metric([eid], st.last_seq)
        yield blocks
        yield lag
        yield seq
        for name, doc, val in (
            ("evictions", "Keys evicted by the LRU bound", ic.num_keys_evicted),
            ("map_evictions", "vLLM-hash mappings evicted by the per-endpoint bound", ic.num_map_evicted),
            ("blocks_stored", "Blocks applied from BlockStored", ic.num_blocks_stored),
            ("blocks_removed", "Blocks applied from BlockRemoved", ic.num_blocks_removed),
            ("unresolved_parent", "BlockStored dropped: parent hash unknown", ic.num_unresolved_parent),
            ("unresolved_hash", "Removals/offload events for unknown hashes", ic.num_unresolved_hash),
            ("block_size_mismatch", "BlockStored dropped: block size differs", ic.num_block_size_mismatch),
            ("messages", "ZMQ messages received", ac.num_messages),
            ("sequence_gaps", "Sequence gaps detected", ac.num_gaps),
            ("publisher_restarts", "Publisher restarts detected", ac.num_restarts),
            ("replays", "Replays requested", ac.num_replays),
            ("resyncs", "Endpoint entries dropped to resync without replay", ac.num_resyncs_without_replay),
            ("duplicates", "Duplicate messages skipped after a replay", ac.num_duplicates),
        ):
            yield CounterMetricFamily(PREFIX + name, doc, value=val)
        yield from self._llmd()
        ev = CounterMetricFamily(PREFIX + "events", "KV events applied", labels=["type"])
        for t, n in ac.events.items():
            ev.add_metric([t], n)
        yield ev
        bad = CounterMetricFamily(PREFIX + "malformed", "Malformed input dropped", labels=["reason"])
        for r, n in ac.malformed.items():
            bad.add_metric([r], n)
        yield bad
        if self._pool is not None:
            pc = self._pool.counters
            yield CounterMetricFamily(PREFIX + "tokenize_requests", "Prompts tokenized for routing", value=pc.num_requests)
            yield CounterMetricFamily(PREFIX + "tokenize_cache_hits", "Tokenization cache hits", value=pc.num_cache_hits)
            yield CounterMetricFamily(
                PREFIX + "tokenizer_fallbacks",
                "Requests routed without tokens (approximate index used)",
                value=pc.num_fallbacks,
            )

    def _llmd(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        ic = self._ap.index.counters
        for name, doc, val in (
            (mn.LLMD_KV_INDEX_ADMISSIONS, "Blocks admitted to the index", float(ic.num_blocks_stored)),
            (mn.LLMD_KV_INDEX_EVICTIONS, "Blocks evicted from the index (BlockRemoved and the LRU bound)",
             float(ic.num_blocks_removed + ic.num_keys_evicted)),
            (mn.LLMD_KV_INDEX_LOOKUP_REQUESTS, "Index lookups performed", float(ic.num_lookups)),
            (mn.LLMD_KV_INDEX_LOOKUP_HITS, "Prefix blocks matched by the best endpoint per lookup",
             ic.lookup_hit_blocks),
            (mn.LLMD_KV_INDEX_MAX_POD_HIT_COUNT, "Longest per-endpoint prefix match observed per lookup",
             ic.lookup_hit_blocks),
        ):
            yield CounterMetricFamily(name, doc, value=val)
        msgs = CounterMetricFamily(mn.LLMD_KV_EVENTS_MESSAGES_RECEIVED, "KV-event messages received",
                                   labels=["pod_identifier"])
        for eid, st in self._ap.streams.items():
            msgs.add_metric([eid], st.num_messages)
        yield msgs
        yield GaugeMetricFamily(mn.LLMD_KV_EVENTS_ACTIVE_SUBSCRIBERS, "KV-event streams subscribed",
                                value=len(self._ap.streams))
