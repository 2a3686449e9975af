"""The Prometheus collector exposes index size, evictions, events, malformed input and fallbacks."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from lanterna.kvindex.apply import EventApplier
from lanterna.kvindex.index import KVIndex
from lanterna.kvindex.metrics import KVIndexCollector
from lanterna.kvindex.tokenization import TokenizerPool
from lanterna.protocol.kv_events import BlockStored


def test_collector_text() -> None:
    ap = EventApplier(KVIndex(capacity=2))
    ap.add_endpoint("a", "m")
    ap.apply_events("a", [BlockStored([1, 2, 3], None, list(range(12)), 4)])
    ap.ingest("a", [b"t"])
    pool = TokenizerPool({})
    reg = CollectorRegistry()
    reg.register(KVIndexCollector(ap, pool))
    text = generate_latest(reg).decode()
    pool.close()
    assert "lanterna_kvindex_keys 1.0" in text  # 3 stored, bound 2: oldest batch evicted
    assert "lanterna_kvindex_evictions_total 2.0" in text
    assert 'lanterna_kvindex_events_total{type="BlockStored"} 1.0' in text
    assert 'lanterna_kvindex_malformed_total{reason="frame_count"} 1.0' in text
    assert 'lanterna_kvindex_endpoint_blocks{endpoint="a"}' in text
    assert "lanterna_kvindex_tokenizer_fallbacks_total 0.0" in text
