"""The added GAIE metrics read back from ``generate_latest`` with their names, types, labels and values."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lanterna.obs.metrics import GatewayMetrics
from lanterna.protocol import metrics_names as mn


def _families(m: GatewayMetrics) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(m.registry).decode())}


def _sample(fams: dict[str, object], name: str, suffix: str, **labels: str) -> float:
    [s] = [s for s in fams[name].samples if s.name == name + suffix and s.labels == labels]  # type: ignore[attr-defined]
    return float(s.value)


def test_completion_observes_ntpot_sizes_tokens() -> None:
    m = GatewayMetrics()
    obj = m.objective("m", "m-served")
    obj.observe_completion(duration_s=2.0, request_bytes=300, response_bytes=5000, prompt_tokens=100,
                           output_tokens=40, cached_tokens=64)
    obj.observe_completion(duration_s=0.1, request_bytes=200, response_bytes=90, prompt_tokens=10,
                           output_tokens=0, cached_tokens=None)  # no tokens out: no NTPOT observation
    fams = _families(m)
    lab = {"model_name": "m", "target_model_name": "m-served"}
    for name in (mn.GAIE_NTPOT, mn.GAIE_REQUEST_SIZES, mn.GAIE_RESPONSE_SIZES, mn.GAIE_PROMPT_CACHED_TOKENS):
        assert fams[name].type == "histogram", name  # type: ignore[attr-defined]
    assert _sample(fams, mn.GAIE_NTPOT, "_count", **lab) == 1
    assert _sample(fams, mn.GAIE_NTPOT, "_sum", **lab) == 0.05
    assert _sample(fams, mn.GAIE_NTPOT, "_bucket", le="0.05", **lab) == 1
    assert _sample(fams, mn.GAIE_REQUEST_SIZES, "_sum", **lab) == 500
    assert _sample(fams, mn.GAIE_RESPONSE_SIZES, "_count", **lab) == 2
    assert _sample(fams, mn.GAIE_PROMPT_CACHED_TOKENS, "_sum", **lab) == 64
    assert _sample(fams, "inference_objective_request_duration_seconds", "_count", **lab) == 2
    assert _sample(fams, "inference_objective_output_tokens", "_count", **lab) == 1


def test_plugin_duration_and_scheduler_attempts() -> None:
    m = GatewayMetrics()
    m.observe_plugin("Scorer", "queue-scorer", "queue-scorer", 0.00015)
    m.observe_plugin("Scorer", "queue-scorer", "queue-scorer", 0.00003)
    m.observe_plugin("Filter", "decode-filter", "decode", 0.002)
    m.scheduler_attempts.labels("success").inc()
    fams = _families(m)
    assert fams[mn.GAIE_PLUGIN_DURATION].type == "histogram"  # type: ignore[attr-defined]
    q = {"extension_point": "Scorer", "plugin_type": "queue-scorer", "plugin_name": "queue-scorer"}
    assert _sample(fams, mn.GAIE_PLUGIN_DURATION, "_count", **q) == 2
    assert _sample(fams, mn.GAIE_PLUGIN_DURATION, "_bucket", le="0.0001", **q) == 1
    d = {"extension_point": "Filter", "plugin_type": "decode-filter", "plugin_name": "decode"}
    assert _sample(fams, mn.GAIE_PLUGIN_DURATION, "_sum", **d) == 0.002
    assert fams[mn.GAIE_SCHEDULER_ATTEMPTS].type == "counter"  # type: ignore[attr-defined]
    assert _sample(fams, mn.GAIE_SCHEDULER_ATTEMPTS, "_total", status="success") == 1
