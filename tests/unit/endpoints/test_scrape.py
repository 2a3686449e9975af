"""Parsing vLLM's /metrics exposition (golden: the real vLLM 0.32 capture)."""

from __future__ import annotations

from lanterna.endpoints.scrape import parse_metrics
from lanterna.endpoints.types import EndpointMetrics
from tests.conftest import REFERENCE


def test_parses_real_vllm_capture() -> None:
    text = (REFERENCE / "metrics.txt").read_text()
    m = parse_metrics(text, EndpointMetrics(), now=12.5)
    assert (m.num_running, m.num_waiting, m.kv_cache_usage) == (0, 0, 0.0)
    assert (m.block_size, m.num_gpu_blocks, m.num_cpu_blocks) == (32, 8192, None)
    assert m.max_lora == 1
    assert m.running_lora_adapters == frozenset()  # the newest lora_requests_info sample wins
    assert m.prefix_cache_queries > 0 and m.scraped_at == 12.5
    assert m.age_s(13.0) == 0.5


def test_sums_engines_and_reads_lora_names() -> None:
    text = "\n".join([
        "# HELP vllm:num_requests_running x",
        'vllm:num_requests_running{engine="0",model_name="m"} 3.0',
        'vllm:num_requests_running{engine="1",model_name="m"} 2.0',
        'vllm:num_requests_waiting{engine="0",model_name="m"} 7.0',
        'vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 99.0',
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5',
        'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.7',
        'vllm:lora_requests_info{max_lora="4",running_lora_adapters="a,b",waiting_lora_adapters="c"} 1.5e9',
        'vllm:lora_requests_info{max_lora="4",running_lora_adapters="",waiting_lora_adapters=""} 1.4e9',
        "vllm:broken_line_without_value",
    ])
    m = parse_metrics(text, EndpointMetrics(), now=1.0)
    assert (m.num_running, m.num_waiting) == (5, 7)
    assert abs(m.kv_cache_usage - 0.6) < 1e-9
    assert m.running_lora_adapters == {"a", "b"} and m.waiting_lora_adapters == {"c"} and m.max_lora == 4


def test_older_gpu_cache_usage_name() -> None:
    m = parse_metrics('vllm:gpu_cache_usage_perc{model_name="m"} 0.25\n', EndpointMetrics(), now=0.0)
    assert m.kv_cache_usage == 0.25
