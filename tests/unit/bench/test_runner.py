"""HTTP load generator against an in-process fake server on loopback: records, failures by reason."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from lanterna.bench.config import parse_config
from lanterna.bench.runner import HttpRunner
from tests.conftest import free_port
from tests.unit.bench.fake_openai import make_app

pytestmark = pytest.mark.integration


@pytest.fixture
async def server() -> AsyncIterator[str]:
    runner = web.AppRunner(make_app())
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _cfg(url: str, model: str, **load: object) -> dict[str, object]:
    return {
        "seed": 1,
        "workload": {"type": "random", "input_len": 20, "output_len": 5, "num_prompts": 10},
        "load": load or {"type": "constant", "warmup": {"rate": 100, "num_requests": 3},
                         "stages": [{"rate": 200, "num_requests": 20}]},
        "target": {"url": url, "model": model, "timeout_s": 10},
    }


async def test_open_loop_records_tokens_and_usage(server: str) -> None:
    res = await HttpRunner(parse_config(_cfg(server, "ok")), progress=False).run()
    assert len(res.stages) == 1  # warm-up excluded
    s = res.stages[0].summary
    assert s.num_requests == 20 and s.num_completed == 20 and s.num_failed == 0
    assert s.output_tokens == 100 and s.input_tokens == 220  # from usage
    assert s.prefix_cache_hit_rate == pytest.approx(4 / 11)
    assert s.latency.ttft.max > 0
    assert s.requested_rate == 200 and s.achieved_rate > 0


@pytest.mark.parametrize(("model", "reason"), [("err500", "http_500"), ("disconnect", "disconnect"),
                                                ("errframe", "stream_error")], ids=["500", "disconnect", "errframe"])
async def test_failures_are_counted_by_reason_and_run_still_reports(server: str, model: str, reason: str) -> None:
    res = await HttpRunner(parse_config(_cfg(server, model)), progress=False).run()
    s = res.stages[0].summary
    assert s.failures == {reason: 20} and s.num_completed == 0


async def test_connection_refused_is_counted(server: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    res = await HttpRunner(parse_config(_cfg(dead, "ok")), progress=False).run()
    assert res.stages[0].summary.failures == {"connect_error": 20}


async def test_mixed_failures_and_concurrency_stage(server: str) -> None:
    cfg = _cfg(server, "flaky", type="concurrency", stages=[{"concurrency": 4, "num_requests": 12}])
    res = await HttpRunner(parse_config(cfg), progress=False).run()
    s = res.stages[0].summary
    assert s.num_requests == 12
    assert s.failures.get("http_500", 0) + s.num_completed == 12
    assert 0 < s.num_completed < 12


async def test_sends_the_same_arrivals_as_the_virtual_cluster(server: str) -> None:
    """One scenario, one arrival stream: the HTTP runner's send schedule is the virtual cluster's arrival times
    (offsets within each stage), so a fidelity run compares real and simulated servers on the same trace."""
    from lanterna.cluster.virtual import run_virtual

    load = {"type": "poisson", "warmup": {"rate": 100, "num_requests": 3},
            "stages": [{"rate": 150, "num_requests": 12}, {"rate": 300, "num_requests": 12}]}
    real = await HttpRunner(parse_config(_cfg(server, "ok", **load)), progress=False).run()
    cfg = {k: v for k, v in _cfg(server, "ok", **load).items() if k != "target"}
    virt = run_virtual(parse_config({**cfg, "cluster": {"replicas": 1, "profile": "tiny-cpu"}}))

    def offsets(stage: object) -> list[float]:
        t = sorted(r.scheduled_s for r in stage.records)  # type: ignore[attr-defined]
        return [x - t[0] for x in t]

    for a, b in zip(real.stages, virt.stages, strict=True):
        assert offsets(a) == pytest.approx(offsets(b), abs=1e-9)
        assert max(offsets(a)) > 0
