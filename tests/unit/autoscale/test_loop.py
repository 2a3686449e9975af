"""The live loop's inputs and outputs: Prometheus text -> signals -> ``Demand`` (pure), and one ``tick`` against
loopback servers serving a gateway's and two model servers' ``/metrics``: the decision, the ``wva_*`` gauges
with WVA's labels, and the actuator call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import generate_latest

from lanterna.autoscale import (
    Autoscaler,
    AutoscalerConfig,
    SaturationPolicy,
    ScaleToZero,
    ScalingBehavior,
    Variant,
)
from lanterna.autoscale.loop import AutoscaleLoop, LoopConfig
from lanterna.autoscale.signals import DemandMeter, GatewaySignals, parse_endpoint, parse_gateway

GATEWAY = """# HELP inference_objective_request_total The counter of requests broken out for each model.
# TYPE inference_objective_request_total counter
inference_objective_request_total{model_name="m",target_model_name="m"} 40.0
inference_objective_request_total{model_name="alias",target_model_name="m"} 2.0
inference_objective_request_created{model_name="m",target_model_name="m"} 1.7e9
inference_objective_running_requests{model_name="m"} 9.0
inference_extension_flow_control_queue_size{inference_pool="p",fairness_id="a",priority="0"} 3.0
inference_extension_flow_control_queue_size{inference_pool="p",fairness_id="b",priority="0"} 1.0
"""


def gw_text(requests: int, running: int, queued: int) -> str:
    return (f'inference_objective_request_total{{model_name="m",target_model_name="m"}} {requests}\n'
            f'inference_objective_running_requests{{model_name="m"}} {running}\n'
            f'inference_extension_flow_control_queue_size{{inference_pool="p",fairness_id="a",priority="0"}} {queued}\n')


def vllm(kv: float, waiting: int, running: int, prompt: float, gen: float) -> str:
    return f"""# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} {kv}
vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting}
vllm:num_requests_running{{engine="0",model_name="m"}} {running}
vllm:prompt_tokens_total{{engine="0",model_name="m"}} {prompt}
vllm:generation_tokens_total{{engine="0",model_name="m"}} {gen}
vllm:time_to_first_token_seconds_bucket{{le="0.1",model_name="m"}} 7.0
"""


def test_parse_gateway_sums_series_and_skips_created() -> None:
    g = parse_gateway(GATEWAY)
    assert g == GatewaySignals(requests_total=42.0, num_queued=4, num_running=9)
    assert g.num_in_flight == 5


def test_parse_endpoint_averages_kv_over_engines() -> None:
    text = vllm(0.5, 2, 3, 100, 20) + 'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.7\n'
    e = parse_endpoint(text)
    assert (round(e.kv_cache_usage, 6), e.num_waiting, e.num_running, e.tokens_total) == (0.6, 2, 3, 120.0)
    assert parse_endpoint("garbage\nvllm:num_requests_waiting{x=\"1\"} nan-ish\n").num_waiting == 0


def test_demand_meter_rates_and_per_endpoint_counters() -> None:
    m = DemandMeter()
    first = m.update(10.0, GatewaySignals(0, 0, 0), {"a": 100.0})
    assert first.arrival_rate_rps == 0 and first.processed_tokens_per_s is None and first.last_request_at is None
    d = m.update(12.0, GatewaySignals(10, 2, 5), {"a": 300.0, "b": 50.0})  # b is new: no rate from it yet
    assert d.arrival_rate_rps == 5.0 and d.processed_tokens_per_s == 100.0
    assert (d.num_queued, d.num_in_flight, d.last_request_at) == (2, 3, 12.0)
    quiet = m.update(14.0, GatewaySignals(10, 0, 0), {"b": 60.0})  # a went away: not negative work
    assert quiet.arrival_rate_rps == 0 and quiet.processed_tokens_per_s == 5.0 and quiet.last_request_at == 12.0


class FakeActuator:
    def __init__(self, n: int) -> None:
        self.n = n
        self.calls: list[tuple[str, int]] = []

    async def replicas(self) -> dict[str, int]:
        return {"v1": self.n}

    async def scale(self, variant: str, replicas: int) -> None:
        self.calls.append((variant, replicas))
        self.n = replicas


class Texts:
    def __init__(self, text: str) -> None:
        self.text = text

    async def handler(self, _req: web.Request) -> web.Response:
        return web.Response(text=self.text)


async def _serve(t: Texts) -> TestServer:
    app = web.Application()
    app.router.add_get("/metrics", t.handler)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    return srv


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Texts, Texts, Texts, list[TestServer]]]:
    gw, a, b = Texts(GATEWAY), Texts(vllm(0.65, 0, 4, 0, 0)), Texts(vllm(0.72, 0, 4, 0, 0))
    srvs = [await _serve(t) for t in (gw, a, b)]
    try:
        yield gw, a, b, srvs
    finally:
        for s in srvs:
            await s.close()


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t


async def test_tick_decides_publishes_wva_gauges_and_actuates(
        servers: tuple[Texts, Texts, Texts, list[TestServer]]) -> None:
    gw, a, b, srvs = servers
    addrs = [f"127.0.0.1:{s.port}" for s in srvs[1:]]
    dead = "127.0.0.1:9"  # asked for, not answering: a starting replica
    act = FakeActuator(3)
    clock = Clock()
    scaler = Autoscaler(SaturationPolicy(), AutoscalerConfig(ScalingBehavior(scale_down_window_s=0)))
    loop = AutoscaleLoop(scaler, [Variant("v1", accelerator="L4", max_replicas=6)],
                         LoopConfig(f"http://127.0.0.1:{srvs[0].port}", namespace="llm", interval_s=1),
                         lambda: {"v1": [*addrs, dead]}, act, clock=clock)
    try:
        # WVA's example: KV 0.65 and 0.72 -> spare 0.115 > 0.10: hold (3 = 2 ready + 1 starting)
        d = await loop.tick()
        assert (d.variants[0].current, d.variants[0].target) == (3, 3) and act.calls == []
        text = generate_latest(loop.metrics.registry).decode()
        assert 'wva_desired_replicas{accelerator_type="L4",namespace="llm",variant_name="v1"} 3.0' in text
        assert 'wva_current_replicas{accelerator_type="L4",namespace="llm",variant_name="v1"} 3.0' in text
        assert 'wva_desired_ratio{accelerator_type="L4",namespace="llm",variant_name="v1"} 1.0' in text
        # the second rises to 0.75: spare 0.10 -> scale up, but a replica is starting (cascade guard): hold
        b.text = vllm(0.75, 0, 4, 10, 10)
        clock.t += 1
        d = await loop.tick()
        assert d.variants[0].target == 3 and act.calls == []
        # the starting one never came; the actuator reports 2: now +1
        act.n = 2
        clock.t += 1
        d = await loop.tick()
        assert d.variants[0].target == 3 and act.calls == [("v1", 3)]
        text = generate_latest(loop.metrics.registry).decode()
        assert 'wva_desired_ratio{accelerator_type="L4",namespace="llm",variant_name="v1"} 1.5' in text
        assert 'direction="up"' in text and 'wva_replica_scaling_total' in text
    finally:
        await loop.close()


async def test_scale_to_zero_then_wake_from_zero(servers: tuple[Texts, Texts, Texts, list[TestServer]]) -> None:
    gw, _, _, srvs = servers
    gw.text = gw_text(42, 0, 0)
    act = FakeActuator(1)
    clock = Clock()
    addrs = [f"127.0.0.1:{srvs[1].port}"]
    scaler = Autoscaler(SaturationPolicy(), AutoscalerConfig(ScalingBehavior(scale_down_window_s=0),
                                                             scale_to_zero=ScaleToZero(True, 5.0)))
    loop = AutoscaleLoop(scaler, [Variant("v1")], LoopConfig(f"http://127.0.0.1:{srvs[0].port}"),
                         lambda: {"v1": addrs if act.n else []}, act, clock=clock)
    try:
        await loop.tick()  # traffic before we looked counts as recent
        clock.t += 10
        d = await loop.tick()
        assert d.total == 0 and act.calls == [("v1", 0)]
        gw.text = gw_text(43, 1, 1)  # one request held at zero
        clock.t += 1
        d = await loop.tick()
        assert d.total == 1 and act.calls[-1] == ("v1", 1)
        clock.t += 1
        await loop.tick()
        assert act.calls[-1] == ("v1", 1) and len(act.calls) == 2  # deduplicated: the starting one is supply
    finally:
        await loop.close()
