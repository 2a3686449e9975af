"""Metric computation on synthetic timelines with known answers."""

from __future__ import annotations

import math

import pytest

from lanterna.bench.config import Slo
from lanterna.bench.metrics import RequestRecord, ratio, stats, summarize


def _rec(i: int, send: float, token_times: list[float], *, end: float | None = None, prompt: int = 10,
         cached: int | None = None, error: str | None = None) -> RequestRecord:
    r = RequestRecord(f"r{i}", 0, scheduled_s=send, send_s=send, prompt_tokens=prompt, cached_tokens=cached)
    for t in token_times:
        r.on_tokens(t)
    r.end_s = end if end is not None else (token_times[-1] if token_times else None)
    r.error = error
    return r


def test_single_request_known_answers() -> None:
    r = _rec(0, 1.0, [1.5, 1.7, 2.0, 2.5])
    assert r.ttft_s == pytest.approx(0.5)
    assert r.tpot_s == pytest.approx((2.5 - 1.5) / 3)
    assert list(r.itl_s) == pytest.approx([0.2, 0.3, 0.5])
    assert r.e2e_s == pytest.approx(1.5)
    assert r.output_tokens == 4


def test_chunk_with_several_tokens_counts_zero_gaps() -> None:
    r = _rec(0, 0.0, [])
    r.on_tokens(1.0, 3)
    r.on_tokens(2.0, 1)
    assert r.output_tokens == 4
    assert list(r.itl_s) == pytest.approx([0.0, 0.0, 1.0])


def test_summary_throughput_latency_failures_goodput() -> None:
    recs = [
        _rec(0, 0.0, [1.0, 2.0], prompt=100, cached=50),  # ttft 1, e2e 2
        _rec(1, 1.0, [1.5, 2.5, 4.0], prompt=100, cached=0),  # ttft .5, e2e 3
        _rec(2, 2.0, [], error="http_500"),
        _rec(3, 3.0, [], error="disconnect"),
        _rec(4, 3.5, [], error="disconnect"),
    ]
    s = summarize(recs, requested_rate=1.0, slo=Slo(ttft_s=0.75))
    assert s.num_requests == 5 and s.num_completed == 2 and s.num_failed == 3
    assert s.failures == {"disconnect": 2, "http_500": 1}
    # span = max end (4.0) - min send of completed (0.0)
    assert s.duration_s == pytest.approx(4.0)
    assert s.throughput.output_tokens_per_s == pytest.approx(5 / 4)
    assert s.throughput.input_tokens_per_s == pytest.approx(200 / 4)
    assert s.throughput.requests_per_s == pytest.approx(0.5)
    assert s.latency.ttft.mean == pytest.approx(0.75)
    assert s.latency.ttft.p50 == pytest.approx(0.75)
    assert s.latency.e2e.max == pytest.approx(3.0)
    assert s.latency.itl.max == pytest.approx(1.5)
    assert s.latency.ntpot.min == pytest.approx(1.0)
    assert s.prefix_cache_hit_rate == pytest.approx(0.25)
    assert s.goodput.share == pytest.approx(1 / 5)
    assert s.achieved_rate == pytest.approx(4 / 3.5)


def test_achieved_vs_requested_flags_a_lagging_generator() -> None:
    recs = [_rec(i, i * 0.5, [i * 0.5 + 0.1]) for i in range(10)]
    for i, r in enumerate(recs):
        r.scheduled_s = i * 0.1  # the schedule asked for 10 req/s, the generator managed 2
    s = summarize(recs, requested_rate=10.0)
    assert s.achieved_rate == pytest.approx(2.0)
    assert s.behind_schedule is True
    assert s.schedule_lag_s.max == pytest.approx(9 * 0.4)


def test_all_failed_stage_still_summarizes() -> None:
    s = summarize([_rec(0, 0.0, [], error="connect_error")], requested_rate=1.0)
    assert s.num_completed == 0
    assert s.latency.ttft is None
    assert s.throughput.output_tokens_per_s == 0.0


@pytest.mark.parametrize(("values", "p50", "p90"), [([1, 2, 3, 4, 5], 3.0, 4.6), ([7], 7.0, 7.0)], ids=["five", "one"])
def test_stats_percentiles(values: list[float], p50: float, p90: float) -> None:
    s = stats(values)
    assert s is not None
    assert s.p50 == pytest.approx(p50) and s.p90 == pytest.approx(p90)
    assert stats([]) is None


def test_ratio_handles_missing() -> None:
    assert ratio(4, 2) == 2
    assert math.isnan(ratio(None, 2)) and math.isnan(ratio(1, 0))


def test_poisson_sampling_noise_is_not_lag() -> None:
    # the schedule itself only asked for 2 req/s over these 10 sends (a sparse Poisson sample of a 3 req/s
    # stage); sending exactly on schedule is not "behind"
    recs = [_rec(i, i * 0.5, [i * 0.5 + 0.1]) for i in range(10)]
    s = summarize(recs, requested_rate=3.0)
    assert s.achieved_rate == pytest.approx(2.0) and s.scheduled_rate == pytest.approx(2.0)
    assert s.behind_schedule is False
