"""Immediate responses (OpenAI error shape), flow control, cancellation, P/D, health and metrics ports."""

from __future__ import annotations

import aiohttp
import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.unit.epp.conftest import picker_for
from tests.unit.epp.envoy_replay import (
    BUFFERED,
    FULL_DUPLEX,
    immediate,
    request_body,
    request_headers,
    response_body,
    response_headers,
    set_headers,
)
from tests.unit.gateway.test_pd import PD

BODY = orjson.dumps({"model": "m", "prompt": "hello " * 20, "max_tokens": 4})
DONE = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4}})


@pytest.mark.parametrize(("path", "body", "status", "etype"), [
    ("/v1/completions", b"{not json", 400, "Bad Request"),
    ("/v1/completions", b'{"model": "m"}', 400, "Bad Request"),  # no prompt
    ("/v1/chat/completions", b'{"model": "m", "prompt": "x"}', 400, "Bad Request"),  # no messages
    ("/v1/completions", b'{"model": "nope", "prompt": "x"}', 404, "NotFoundError"),
], ids=["bad-json", "no-prompt", "no-messages", "unknown-model"])
@pytest.mark.parametrize("mode", [FULL_DUPLEX, BUFFERED], ids=["full-duplex", "buffered"])
async def test_invalid_requests_get_an_openai_error_immediate_response(upstreams, path, body, status, etype,
                                                                       mode) -> None:
    a = await upstreams()
    async with picker_for([a], mode=mode) as p:
        s = p.stream()
        if mode == BUFFERED:
            await s.exchange(request_headers(path, {"x-request-id": "rid-9"}))
        else:
            await s.send(request_headers(path, {"x-request-id": "rid-9"}))
        (resp,) = await s.exchange(request_body(body, True))
        ir = immediate(resp)
        assert ir.status == status
        assert ir.headers["content-type"] == "application/json" and ir.headers["x-request-id"] == "rid-9"
        assert ir.body["error"]["type"] == etype and ir.body["error"]["code"] == status
        assert p.loads_all_zero()


async def test_known_model_without_ready_endpoint_is_503_with_retry_after(upstreams) -> None:
    a = await upstreams()
    async with picker_for([a]) as p:
        p.gw.store.set_healthy(p.gw.store.all()[0], False)
        s = p.stream()
        await s.send(request_headers())
        ir = immediate((await s.exchange(request_body(BODY, True)))[0])
        assert ir.status == 503 and ir.body["error"]["type"] == "ServiceUnavailableError"
        assert ir.headers["retry-after"] == "5"
        assert ir.headers["x-llm-d-request-dropped-reason"] == "no-ready-endpoint"


async def test_subset_hint_with_no_eligible_endpoint_is_503(upstreams) -> None:
    a = await upstreams()
    async with picker_for([a]) as p:
        s = p.stream()
        await s.send(request_headers(subset=["10.9.9.9:8000"]))
        ir = immediate((await s.exchange(request_body(BODY, True)))[0])
        assert ir.status == 503


async def test_body_over_the_limit_is_413(upstreams) -> None:
    a = await upstreams()
    async with picker_for([a], {"gateway": {"max_body_bytes": 2048}}) as p:
        s = p.stream()
        await s.send(request_headers())
        await s.send(request_body(b"x" * 1024, False))
        ir = immediate((await s.exchange(request_body(b"x" * 2048, False)))[0])
        assert ir.status == 413


FLOW_ONE = {"flowcontrol": {"enabled": True, "max_concurrency": 1, "max_queue_len": 0}}


async def test_flow_control_rejection_is_429_with_dropped_reason(upstreams) -> None:
    a = await upstreams()
    async with picker_for([a], FLOW_ONE) as p:
        first = p.stream()
        await first.send(request_headers())
        await first.exchange(request_body(BODY, True), n=2)  # holds the only slot until its response ends
        second = p.stream()
        await second.send(request_headers())
        ir = immediate((await second.exchange(request_body(BODY, True)))[0])
        assert ir.status == 429 and ir.body["error"]["type"] == "RateLimitError"
        assert ir.headers["x-llm-d-request-dropped-reason"] == "rejected-saturated"
        assert "retry-after" in ir.headers
        await first.exchange(response_headers(200))
        await first.exchange(response_body(DONE, True))
        third = p.stream()  # the slot came back with the first response's end
        await third.send(request_headers())
        hdr, _ = await third.exchange(request_body(BODY, True), n=2)
        assert set_headers(hdr.request_headers.response)["x-gateway-destination-endpoint"] == a.address
        third.cancel()


async def test_envoy_cancelling_a_picked_stream_releases_its_load_and_flow_slot(upstreams) -> None:
    a = await upstreams()
    async with picker_for([a], {"flowcontrol": {"enabled": True, "max_concurrency": 1, "max_queue_len": 8}}) as p:
        first = p.stream()
        await first.send(request_headers())
        await first.exchange(request_body(BODY, True), n=2)
        await first.exchange(response_headers(200, "text/event-stream"))
        await first.exchange(response_body(b'data: {"choices":[]}\n\n', False))  # mid-stream
        assert p.load() == {a.address: 1}
        queued = p.stream()
        await queued.send(request_headers())
        await queued.send(request_body(BODY, True))  # waits in the flow-control queue: no answer yet
        first.cancel()  # client gone: Envoy resets the ext_proc stream
        hdr = await queued.recv()  # granted only once the cancelled request gave its slot back
        assert set_headers(hdr.request_headers.response)["x-gateway-destination-endpoint"] == a.address
        await queued.recv()
        assert p.load() == {a.address: 1}  # the cancelled request's load is gone, only this one's remains
        await queued.exchange(response_headers(200))
        await queued.exchange(response_body(DONE, True))
        assert p.loads_all_zero()
        assert p.gw.flow is not None and p.gw.flow.in_flight == 0
        running = p.gw.metrics.registry.get_sample_value("inference_objective_running_requests", {"model_name": "m"})
        assert running == 0


async def test_envoy_cancelling_a_queued_stream_leaves_the_queue(upstreams) -> None:
    a = await upstreams()
    async with picker_for([a], {"flowcontrol": {"enabled": True, "max_concurrency": 1, "max_queue_len": 1}}) as p:
        first = p.stream()
        await first.send(request_headers())
        await first.exchange(request_body(BODY, True), n=2)
        gone = p.stream()
        await gone.send(request_headers())
        await gone.send(request_body(BODY, True))
        gone.cancel()  # same connection as the messages below: the reset reaches the picker before them
        await first.exchange(response_headers(200))
        await first.exchange(response_body(DONE, True))
        nxt = p.stream()  # the cancelled entry neither holds the slot nor a queue place
        await nxt.send(request_headers())
        hdr, _ = await nxt.exchange(request_body(BODY, True), n=2)
        assert hdr.WhichOneof("response") == "request_headers"
        nxt.cancel()


async def test_pd_pick_names_the_prefiller_and_holds_its_prefill_load_until_first_byte(upstreams) -> None:
    pf, dc = await upstreams(), await upstreams()
    cfg = {"scheduler": PD, "endpoints": {"static": [
        {"address": pf.address, "models": ["m"], "labels": {"llm-d.ai/role": "prefill"}},
        {"address": dc.address, "models": ["m"], "labels": {"llm-d.ai/role": "decode"}}]}}
    async with picker_for([], cfg) as p:
        s = p.stream()
        await s.send(request_headers())
        long = orjson.dumps({"model": "m", "prompt": "a fairly long prompt " * 20, "max_tokens": 4})
        hdr, _ = await s.exchange(request_body(long, True), n=2)
        h = set_headers(hdr.request_headers.response)
        assert h["x-gateway-destination-endpoint"].split(",")[0] == dc.address
        assert h["x-prefiller-host-port"] == pf.address
        prefill_ep = p.gw.store.get(pf.address)
        assert prefill_ep is not None and prefill_ep.load.in_flight_prefill_tokens > 0
        await s.exchange(response_headers(200))
        await s.exchange(response_body(DONE, True))
        assert p.loads_all_zero()


async def test_grpc_health_and_metrics_ports(upstreams) -> None:
    a = await upstreams()
    async with picker_for([a]) as p:
        assert p.srv.health_port is not None and p.srv.metrics_port is not None
        for port in (p.srv.health_port, p.srv.grpc_port):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = health_pb2_grpc.HealthStub(ch)
                for svc in ("", "liveness", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor"):
                    r = await stub.Check(health_pb2.HealthCheckRequest(service=svc))
                    assert r.status == health_pb2.HealthCheckResponse.SERVING, svc
        s = p.stream()
        await s.send(request_headers())
        await s.exchange(request_body(BODY, True), n=2)
        await s.exchange(response_headers(200))
        await s.exchange(response_body(DONE, True))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{p.srv.metrics_port}/metrics") as r:
                text = await r.text()
        assert 'inference_objective_request_total{model_name="m",target_model_name="m"} 1.0' in text
        assert 'inference_pool_ready_pods{name="lanterna"} 1.0' in text
        assert "inference_extension_scheduler_e2e_duration_seconds_count 1.0" in text


async def test_readiness_follows_endpoint_health(upstreams) -> None:
    a = await upstreams()
    cfg = {"endpoints": {"health_interval_s": 0.05, "unhealthy_after": 1, "scrape_timeout_s": 0.5}}
    async with picker_for([a], cfg) as p:
        assert p.srv.health_port is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{p.srv.health_port}") as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service="readiness"))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            await a.close()  # the model server goes away: the next health round marks it down
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            live = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="liveness"))
            assert live.status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
