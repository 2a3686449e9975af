"""SLO headers through the real gateway app (in-memory upstreams): parsed, fed to the latency predictor at
completion (its error metrics move), and a sheddable request predicted to miss its SLO is refused with 429."""

from __future__ import annotations

from typing import Any

from lanterna.gateway.memory_transport import Scripted
from lanterna.obs.predict_metrics import APE
from tests.unit.gateway.test_memory_dispatch import ADDRS, BODY, FRAMES, mem_gateway

SLO_SCHEDULER: dict[str, Any] = {
    "scheduler": {"plugins": [{"type": "predicted-latency-scorer"}, {"type": "max-score-picker"}],
                  "schedulingProfiles": [{"name": "default", "plugins": [
                      {"pluginRef": "predicted-latency-scorer"}, {"pluginRef": "max-score-picker"}]}]}}


def ape_count(gw: Any, kind: str) -> float:
    v = gw.metrics.registry.get_sample_value(f"{APE}_count", {"model_name": "m", "kind": kind})
    return float(v or 0.0)


async def test_completed_streams_train_the_predictor_and_export_errors() -> None:
    async with mem_gateway(SLO_SCHEDULER) as h:
        for a in ADDRS:
            h.t.script(a, *[Scripted.sse(FRAMES) for _ in range(3)])
        for _ in range(3):
            r = await h.post({**BODY, "stream": True}, headers={"x-slo-ttft-ms": "2000", "x-slo-tpot-ms": "500"})
            assert r.status == 200
            await r.read()
        assert ape_count(h.gw, "ttft") == 3 and ape_count(h.gw, "tpot") == 3  # two tokens each: TPOT known
        assert h.load_is_zero()


async def test_malformed_slo_header_is_400() -> None:
    async with mem_gateway(SLO_SCHEDULER) as h:
        for bad in ("soon", "-5", "0"):
            r = await h.post(headers={"x-slo-ttft-ms": bad})
            assert r.status == 400
            assert (await r.json())["error"]["param"] == "x-slo-ttft-ms"
        assert h.t.sent == []


async def test_sheddable_request_predicted_to_miss_is_refused_early() -> None:
    async with mem_gateway(SLO_SCHEDULER) as h:
        r = await h.post(headers={"x-slo-ttft-ms": "0.01", "x-gateway-inference-objective": "-1"})
        assert r.status == 429
        assert r.headers["x-llm-d-request-dropped-reason"] == "rejected-saturated"
        assert (await r.json())["error"]["type"] == "RateLimitError"
        assert h.t.sent == []  # no replica saw it
        assert h.load_is_zero()
