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


def test_llmd_names_count_admissions_evictions_lookups_and_hits() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from lanterna.protocol.kv_events import BlockRemoved

    ap = EventApplier(KVIndex())
    ap.add_endpoint("a", "m")
    ap.add_endpoint("b", "m")
    ap.apply_events("a", [BlockStored([1, 2, 3], None, list(range(12)), 4)])
    ap.apply_events("a", [BlockRemoved([3])])
    ap.ingest("a", [b"t"])  # malformed still counts as a received message
    ap.index.match("m", None, list(range(12)), ["a", "b"])  # a holds 2 consecutive blocks
    ap.index.match("m", None, [99] * 8, ["a", "b"])  # nobody holds it
    reg = CollectorRegistry()
    reg.register(KVIndexCollector(ap))
    fams = {f.name: f for f in text_string_to_metric_families(generate_latest(reg).decode())}

    def value(name: str, **labels: str) -> float:
        [s] = [s for s in fams[name].samples if s.name.endswith("_total") or fams[name].type == "gauge"
               if s.labels == labels]
        return s.value

    for base, want in (("llm_d_epp_kv_cache_index_admissions", 3), ("llm_d_epp_kv_cache_index_evictions", 1),
                       ("llm_d_epp_kv_cache_index_lookup_requests", 2), ("llm_d_epp_kv_cache_index_lookup_hits", 2),
                       ("llm_d_epp_kv_cache_index_max_pod_hit_count", 2)):
        assert fams[base].type == "counter", base
        assert value(base) == want, base
    assert value("llm_d_epp_kv_cache_events_messages_received", pod_identifier="a") == 1
    assert value("llm_d_epp_kv_cache_events_messages_received", pod_identifier="b") == 0
    assert fams["llm_d_epp_kv_cache_events_active_subscribers"].type == "gauge"
    assert value("llm_d_epp_kv_cache_events_active_subscribers") == 2
    assert "lanterna_kvindex_keys" in fams  # our own names stay
