"""The gateway's HTTP behaviour end to end against fake upstreams: relay, load accounting, bad input."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from tests.unit.gateway.conftest import gateway_for

BODY = {"model": "m", "prompt": "hello world", "max_tokens": 3}


async def test_non_streaming_relays_body_and_request_id(upstreams) -> None:
    up = await upstreams()
    async with gateway_for([up]) as h:
        r = await h.post("/v1/completions", BODY, headers={"x-request-id": "req-42"})
        assert r.status == 200
        assert (await r.json())["usage"]["completion_tokens"] == 3
        assert r.headers["x-request-id"] == "req-42"
        assert up.headers[0]["x-request-id"] == "req-42"  # forwarded upstream
        assert r.headers["x-gateway-destination-endpoint"] == up.address
        r2 = await h.post("/v1/completions", BODY)
        assert r2.headers["x-request-id"] and r2.headers["x-request-id"] != "req-42"


async def test_stream_bytes_are_relayed_unchanged(upstreams) -> None:
    up = await upstreams()
    async with gateway_for([up]) as h:
        r = await h.post("/v1/completions", {**BODY, "stream": True})
        got = await r.read()
    frames = [f for f in got.split(b"\n\n") if f]
    assert frames[-1] == b"data: [DONE]"
    assert frames[0] == b'data: {"id":"cmpl-1","model":"m","choices":[{"index":0,"text":"t0"}]}'
    assert len(frames) == 3 + 2


async def test_load_is_held_until_stream_ends_and_prefill_released_at_first_token(upstreams) -> None:
    up = await upstreams(hold=asyncio.Event())
    async with gateway_for([up]) as h:
        r = await h.post("/v1/completions", {**BODY, "stream": True})
        first = await r.content.readuntil(b"\n\n")
        assert first.startswith(b"data: ")
        mid = (await h.load())[up.address]
        assert mid["in_flight_requests"] == 1
        assert mid["in_flight_decode_seqs"] == 1
        assert mid["in_flight_prefill_tokens"] == 0  # released at first token
        assert mid["in_flight_kv_tokens"] > 0
        up.hold.set()
        rest = await r.read()
        assert rest.endswith(b"data: [DONE]\n\n")
        assert (await h.load())[up.address] == dict.fromkeys(mid, 0)


async def _poll(cond, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached before deadline"
        await asyncio.sleep(0.01)


async def test_client_disconnect_mid_stream_releases_load_and_aborts_upstream(upstreams) -> None:
    up = await upstreams(hold=asyncio.Event())
    async with gateway_for([up]) as h:
        r = await h.post("/v1/completions", {**BODY, "stream": True})
        await r.content.readuntil(b"\n\n")
        assert (await h.load())[up.address]["in_flight_requests"] == 1
        r.close()  # the client goes away mid-stream

        async def released() -> bool:
            return (await h.load())[up.address]["in_flight_requests"] == 0

        await _poll(released)
        up.hold.set()

        async def upstream_aborted() -> bool:
            return up.aborted == 1

        await _poll(upstream_aborted)
        assert (await h.load())[up.address] == {"in_flight_requests": 0, "in_flight_prefill_tokens": 0,
                                                 "in_flight_decode_seqs": 0, "in_flight_kv_tokens": 0}


async def test_upstream_dying_mid_stream_ends_with_error_frame_and_gateway_keeps_serving(upstreams) -> None:
    up = await upstreams(mode="die")
    async with gateway_for([up]) as h:
        r = await h.post("/v1/completions", {**BODY, "stream": True})
        assert r.status == 200
        frames = [f for f in (await r.read()).split(b"\n\n") if f]
        assert frames[-1] == b"data: [DONE]"
        err = msgspec.json.decode(frames[-2][len(b"data: "):])
        assert err["error"]["code"] == 502 and err["error"]["type"] == "BadGatewayError"
        assert (await h.load())[up.address]["in_flight_requests"] == 0
        up.mode = "ok"
        r2 = await h.post("/v1/completions", BODY)
        assert r2.status == 200


async def test_chat_stream_with_usage_counts_tokens_in_metrics(upstreams) -> None:
    up = await upstreams()
    async with gateway_for([up]) as h:
        r = await h.post("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                                  "stream": True})
        await r.read()
        async with h.http.get(h.url + "/metrics") as mr:
            text = await mr.text()
    assert 'inference_objective_request_total{model_name="m",target_model_name="m"} 1.0' in text
    assert 'inference_objective_output_tokens_sum{model_name="m",target_model_name="m"} 3.0' in text
    assert 'inference_objective_input_tokens_sum{model_name="m",target_model_name="m"} 7.0' in text
    for name in ("inference_objective_request_duration_seconds_bucket", "inference_pool_ready_pods",
                 "inference_pool_average_kv_cache_utilization", "inference_pool_average_queue_size",
                 "inference_extension_scheduler_e2e_duration_seconds_count", "inference_objective_running_requests"):
        assert name in text


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "check"),
    [
        ("POST", "/v1/completions", b'{"model": "m", "prompt": ', 400, lambda b: b["error"]["type"] == "Bad Request"),
        ("POST", "/v1/completions", b'[1, 2]', 400, lambda b: b["error"]["code"] == 400),
        ("POST", "/v1/chat/completions", b'{"model": "m"}', 400, lambda b: b["error"]["param"] == "body.messages"),
        ("POST", "/v1/completions", b'{"model": "nope", "prompt": "x"}', 404,
         lambda b: b["error"]["type"] == "NotFoundError" and "Valid aliases: m." in b["error"]["message"]),
        ("POST", "/v1/completions", b'{"model": "m", "prompt": "' + b"x" * 2_000_000 + b'"}', 413,
         lambda b: b["error"]["code"] == 413),
        ("GET", "/v1/nothing", None, 404, lambda b: (b["error"]["type"], b["error"]["code"]) == ("NotFoundError", 404)),
        ("GET", "/v1/completions", None, 405,
         lambda b: (b["error"]["type"], b["error"]["code"]) == ("MethodNotAllowed", 405)),
    ],
    ids=["malformed-json", "not-an-object", "chat-missing-messages", "unknown-model", "oversize", "bad-path",
         "bad-method"],
)
async def test_bad_input_gets_openai_shaped_errors(upstreams, method, path, body, status, check) -> None:
    up = await upstreams()
    async with gateway_for([up], {"gateway": {"max_body_bytes": 1_000_000}}) as h:
        async with h.http.request(method, h.url + path, data=body) as r:
            assert r.status == status
            assert r.headers["x-request-id"]
            assert check(await r.json())
    assert up.hits == 0


async def test_flow_control_rejects_over_capacity_with_429(upstreams) -> None:
    up = await upstreams(hold=asyncio.Event())
    cfg = {"flowcontrol": {"max_concurrency": 1, "max_queue_len": 0}}
    async with gateway_for([up], cfg) as h:
        r1 = await h.post("/v1/completions", {**BODY, "stream": True})
        await r1.content.readuntil(b"\n\n")
        r2 = await h.post("/v1/completions", BODY)
        assert r2.status == 429
        assert r2.headers.get("retry-after")
        assert r2.headers.get("x-llm-d-request-dropped-reason") == "rejected-saturated"
        up.hold.set()
        await r1.read()


def _samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """``{labels: value}`` of one metric from a Prometheus exposition."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name) + 1:].rpartition("} ")
            pairs = (kv.split("=", 1) for kv in labels.split(",")) if labels else ()
            out[frozenset((k, v.strip('"')) for k, v in pairs)] = float(value)
    return out


def _lab(**kw: str) -> frozenset[tuple[str, str]]:
    return frozenset({"inference_pool": "lanterna", **kw}.items())


async def test_flow_control_queue_and_rejections_are_exported(upstreams) -> None:
    up = await upstreams(hold=asyncio.Event())
    cfg = {"flowcontrol": {"max_concurrency": 1, "max_queue_len": 1}, "gateway": {"objectives": {"batch": -1}}}
    async with gateway_for([up], cfg) as h:
        r1 = await h.post("/v1/completions", {**BODY, "stream": True})
        await r1.content.readuntil(b"\n\n")
        flow, admit, entered = h.gw.flow, h.gw.flow.admit, asyncio.Event()

        def admit_and_tell(req):  # the admission enqueues before its task next yields: then wake the test
            asyncio.get_running_loop().call_soon(entered.set)
            return admit(req)

        flow.admit = admit_and_tell
        queued = asyncio.create_task(h.post("/v1/completions", BODY, headers={
            "x-gateway-inference-fairness-id": "tenant-a", "x-gateway-inference-objective": "batch"}))
        await asyncio.wait_for(entered.wait(), 5)
        assert flow.num_queued == 1
        r3 = asyncio.create_task(h.post("/v1/completions", BODY))  # queue full: evicts the sheddable one
        r2 = await queued
        assert r2.status == 429 and r2.headers["x-llm-d-request-dropped-reason"] == "rejected-saturated"
        text = await (await h.http.get(h.url + "/metrics")).text()  # r3 is queued now
        up.hold.set()
        await r1.read()
        assert (await r3).status == 200
        rejected = _samples(text, "lanterna_flow_control_rejected_requests_total")
        assert rejected[_lab(reason="evicted", dropped_reason="rejected-saturated")] == 1
        assert rejected[_lab(reason="ttl_expired", dropped_reason="rejected-ttl-expired")] == 0
        assert _samples(text, "inference_extension_flow_control_queue_size") == {
            _lab(fairness_id="anonymous", priority="0"): 1.0}
        assert _samples(text, "lanterna_flow_control_queue_band_size") == {_lab(priority="0"): 1.0}
        assert _samples(text, "inference_extension_flow_control_pool_saturation") == {_lab(): 0.0}
