"""Writes ``lanterna.json``, the Grafana dashboard (run: python deploy/dashboards/build.py).

Panels read the gateway's metrics (GAIE names, Lanterna's own) and vLLM's (scraped by the PodMonitor, whose
relabelling adds ``role`` from ``llm-d.ai/role``). A test checks every query names only metrics the project
exports (tests/unit/k8s/test_dashboard.py)."""

from __future__ import annotations

import json
from pathlib import Path

PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [  # (title, unit, [(expr, legend)])
    ("Requests / s by model", "reqps", [
        ("sum by (model_name) (rate(inference_objective_request_total[1m]))", "{{model_name}}")]),
    ("Errors / s by code", "reqps", [
        ("sum by (error_code) (rate(inference_objective_request_error_total[1m]))", "{{error_code}}")]),
    ("Time to first token (p50, p99)", "s", [
        ("histogram_quantile(0.5, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))", "p50"),
        ("histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))", "p99")]),
    ("Time per output token (p50, p99)", "s", [
        ("histogram_quantile(0.5, sum by (le) (rate(vllm:request_time_per_output_token_seconds_bucket[5m])))", "p50"),
        ("histogram_quantile(0.99, sum by (le) (rate(vllm:request_time_per_output_token_seconds_bucket[5m])))",
         "p99"),
        ("histogram_quantile(0.99, sum by (le) "
         "(rate(inference_objective_normalized_time_per_output_token_seconds_bucket[5m])))", "NTPOT p99 (gateway)")]),
    ("Request latency at the gateway (p50, p99)", "s", [
        ("histogram_quantile(0.5, sum by (le) (rate(inference_objective_request_duration_seconds_bucket[5m])))", "p50"),
        ("histogram_quantile(0.99, sum by (le) (rate(inference_objective_request_duration_seconds_bucket[5m])))",
         "p99")]),
    ("Queues: gateway flow control and model servers", "short", [
        ("sum(inference_extension_flow_control_queue_size)", "gateway queue"),
        ("sum(vllm:num_requests_waiting)", "vLLM waiting"),
        ("sum(vllm:num_requests_running)", "vLLM running")]),
    ("KV-cache use per endpoint", "percentunit", [
        ("vllm:kv_cache_usage_perc", "{{pod}}"),
        ("inference_pool_average_kv_cache_utilization", "pool average")]),
    ("Prefix-cache hit rate", "percentunit", [
        ("sum(rate(vllm:prefix_cache_hits_total[5m])) / clamp_min(sum(rate(vllm:prefix_cache_queries_total[5m])), 1)",
         "vLLM (tokens)"),
        ("sum(rate(inference_objective_prompt_cached_tokens_sum[5m])) / "
         "clamp_min(sum(rate(inference_objective_input_tokens_sum[5m])), 1)", "gateway (usage.cached_tokens)")]),
    ("P/D: decisions and prefill fallbacks / s, requests by server role", "reqps", [
        ("sum by (decision_type) (rate(llm_d_inference_scheduler_disagg_decision_total[1m]))", "{{decision_type}}"),
        ("sum by (reason) (rate(lanterna_gateway_pd_prefill_fallbacks_total[1m]))", "fallback {{reason}}"),
        ("sum by (role) (rate(vllm:request_success_total[1m]))", "{{role}}")]),
    ("Scheduler latency (p99) by plugin", "s", [
        ("histogram_quantile(0.99, sum by (le) (rate(inference_extension_scheduler_e2e_duration_seconds_bucket[5m])))",
         "scheduler e2e"),
        ("histogram_quantile(0.99, sum by (le, plugin_type) "
         "(rate(inference_extension_plugin_duration_seconds_bucket[5m])))", "{{plugin_type}}")]),
    ("Shed and rejected requests / s", "reqps", [
        ("sum by (reason) (rate(lanterna_flow_control_rejected_requests_total[1m]))", "{{reason}}"),
        ("sum by (status) (rate(inference_extension_scheduler_attempts_total[1m]))", "scheduler {{status}}")]),
    ("Per endpoint: queue and gateway-side failures", "short", [
        ("inference_pool_per_pod_queue_size", "{{model_server_pod}}"),
        ("sum by (endpoint) (rate(lanterna_gateway_upstream_failures_total[1m]))", "failures {{endpoint}}"),
        ("lanterna_gateway_circuit_open", "circuit open {{endpoint}}")]),
    ("KV index: blocks per endpoint and event lag", "short", [
        ("lanterna_kvindex_endpoint_blocks", "{{endpoint}}"),
        ("lanterna_kvindex_lag_seconds", "lag {{endpoint}}")]),
    ("Ready endpoints", "short", [("inference_pool_ready_pods", "{{inference_pool}}")]),
]


def build() -> dict[str, object]:
    panels = []
    for i, (title, unit, targets) in enumerate(PANELS):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": title, "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend}
                        for j, (expr, legend) in enumerate(targets)],
        })
    return {
        "title": "Lanterna", "uid": "lanterna-overview", "schemaVersion": 39, "version": 1, "editable": True,
        "time": {"from": "now-1h", "to": "now"}, "refresh": "30s", "tags": ["lanterna", "llm-d", "vllm"],
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus"}]},
        "panels": panels,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("lanterna.json")
    out.write_text(json.dumps(build(), indent=2) + "\n")
