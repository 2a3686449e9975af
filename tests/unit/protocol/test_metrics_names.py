"""protocol.metrics_names: every constant and bucket list matches a real vLLM 0.32 /metrics capture."""

from __future__ import annotations

import re

import pytest
from tests.conftest import REFERENCE

from lanterna.protocol import metrics_names as mn

TYPES = dict(line.split() for line in (REFERENCE / "metric_types.txt").read_text().splitlines() if line.strip())
METRICS = (REFERENCE / "metrics.txt").read_text()


@pytest.mark.parametrize(("name", "kind"), [
    (mn.NUM_REQUESTS_RUNNING, "gauge"), (mn.NUM_REQUESTS_WAITING, "gauge"), (mn.KV_CACHE_USAGE_PERC, "gauge"),
    (mn.CACHE_CONFIG_INFO, "gauge"), (mn.LORA_REQUESTS_INFO, "gauge"),
    (mn.PREFIX_CACHE_QUERIES + "_total", "counter"), (mn.PREFIX_CACHE_HITS + "_total", "counter"),
    (mn.PROMPT_TOKENS + "_total", "counter"), (mn.GENERATION_TOKENS + "_total", "counter"),
    (mn.NUM_PREEMPTIONS + "_total", "counter"), (mn.REQUEST_SUCCESS + "_total", "counter"),
    (mn.TIME_TO_FIRST_TOKEN, "histogram"), (mn.INTER_TOKEN_LATENCY, "histogram"),
    (mn.TIME_PER_OUTPUT_TOKEN, "histogram"), (mn.E2E_REQUEST_LATENCY, "histogram"),
    (mn.REQUEST_QUEUE_TIME, "histogram"), (mn.REQUEST_PREFILL_TIME, "histogram"),
    (mn.REQUEST_DECODE_TIME, "histogram"), (mn.REQUEST_INFERENCE_TIME, "histogram"),
    (mn.REQUEST_PROMPT_TOKENS, "histogram"), (mn.REQUEST_GENERATION_TOKENS, "histogram"),
    (mn.ITERATION_TOKENS, "histogram"), (mn.REQUEST_PARAMS_MAX_TOKENS, "histogram"),
], ids=lambda v: str(v))
def test_name_and_type_match_reference(name: str, kind: str) -> None:
    assert TYPES[name] == kind


def _buckets(name: str) -> tuple[float, ...]:
    les = re.findall(rf'^{re.escape(name)}_bucket{{[^}}]*le="([^"]+)"', METRICS, flags=re.M)
    return tuple(float(x) for x in les if x != "+Inf")


@pytest.mark.parametrize(("name", "buckets"), [
    (mn.TIME_TO_FIRST_TOKEN, mn.TTFT_BUCKETS), (mn.INTER_TOKEN_LATENCY, mn.ITL_BUCKETS),
    (mn.TIME_PER_OUTPUT_TOKEN, mn.ITL_BUCKETS), (mn.E2E_REQUEST_LATENCY, mn.REQUEST_LATENCY_BUCKETS),
    (mn.REQUEST_QUEUE_TIME, mn.REQUEST_LATENCY_BUCKETS), (mn.REQUEST_PREFILL_TIME, mn.REQUEST_LATENCY_BUCKETS),
    (mn.REQUEST_DECODE_TIME, mn.REQUEST_LATENCY_BUCKETS), (mn.REQUEST_PROMPT_TOKENS, mn.TOKEN_COUNT_BUCKETS),
    (mn.REQUEST_GENERATION_TOKENS, mn.TOKEN_COUNT_BUCKETS), (mn.ITERATION_TOKENS, mn.ITERATION_TOKEN_BUCKETS),
], ids=lambda v: v if isinstance(v, str) else "b")
def test_buckets_match_reference(name: str, buckets: tuple[float, ...]) -> None:
    assert _buckets(name) == buckets


def test_finished_reasons_match_reference() -> None:
    found = re.findall(r'^vllm:request_success_total{[^}]*finished_reason="([a-z]+)"', METRICS, flags=re.M)
    assert tuple(found) == mn.FINISHED_REASONS
