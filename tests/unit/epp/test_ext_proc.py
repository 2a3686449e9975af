"""The ext_proc picker over a real gRPC stream: Envoy's message sequence in both body modes."""

from __future__ import annotations

import orjson
import pytest

from tests.unit.epp.conftest import picker_for
from tests.unit.epp.envoy_replay import (
    BUFFERED,
    FULL_DUPLEX,
    destination_metadata,
    request_body,
    request_headers,
    response_body,
    response_headers,
    set_headers,
)

BODY = orjson.dumps({"model": "m", "prompt": "the quick brown fox " * 30, "max_tokens": 5})
USAGE_JSON = orjson.dumps({"id": "c", "choices": [{"text": "abc"}],
                           "usage": {"prompt_tokens": 7, "completion_tokens": 3,
                                     "prompt_tokens_details": {"cached_tokens": 2}}})


async def test_full_duplex_pick_after_body_echoes_every_byte_and_releases_on_response_end(upstreams) -> None:
    a, b = await upstreams(), await upstreams()
    async with picker_for([a, b]) as p:
        s = p.stream()
        await s.send(request_headers(extra={"x-request-id": "r-1"}))
        half = len(BODY) // 2
        await s.send(request_body(BODY[:half], False))  # no answer yet: the headers wait for the whole body
        hdr, body = await s.exchange(request_body(BODY[half:], True), n=2)
        assert hdr.WhichOneof("response") == "request_headers"
        dest = set_headers(hdr.request_headers.response)["x-gateway-destination-endpoint"]
        primary, *fallbacks = dest.split(",")
        assert {primary, *fallbacks} == {a.address, b.address}
        assert destination_metadata(hdr) == dest  # header and envoy.lb metadata never differ
        assert "content-length" not in set_headers(hdr.request_headers.response)  # body unchanged
        sr = body.request_body.response.body_mutation.streamed_response
        assert sr.body == BODY and sr.end_of_stream
        assert p.load()[primary] == 1  # counted from the pick until the response ends

        (rh,) = await s.exchange(response_headers(200))
        assert rh.WhichOneof("response") == "response_headers"
        (rb,) = await s.exchange(response_body(USAGE_JSON, True))
        echo = rb.response_body.response.body_mutation.streamed_response
        assert echo.body == USAGE_JSON and echo.end_of_stream
        assert p.loads_all_zero()
        reg = p.gw.metrics.registry
        assert reg.get_sample_value("inference_objective_request_total", {"model_name": "m",
                                                                            "target_model_name": "m"}) == 1
        assert reg.get_sample_value("inference_objective_input_tokens_sum", {"model_name": "m",
                                                                               "target_model_name": "m"}) == 7
        assert reg.get_sample_value("inference_objective_running_requests", {"model_name": "m"}) == 0
        await s.done()


async def test_buffered_mode_lets_headers_through_then_picks_on_the_body(upstreams) -> None:
    a = await upstreams()
    async with picker_for([a], mode=BUFFERED) as p:
        s = p.stream()
        (first,) = await s.exchange(request_headers())
        assert first.WhichOneof("response") == "request_headers"
        assert not first.request_headers.response.header_mutation.set_headers  # CONTINUE, nothing picked yet
        (resp,) = await s.exchange(request_body(BODY, True))
        common = resp.request_body.response
        assert set_headers(common)["x-gateway-destination-endpoint"] == a.address
        assert destination_metadata(resp) == a.address
        assert not common.HasField("body_mutation")  # Envoy keeps its buffered body
        await s.exchange(response_headers(200))
        (rb,) = await s.exchange(response_body(USAGE_JSON, True))
        assert not rb.response_body.response.HasField("body_mutation")
        assert p.loads_all_zero()


@pytest.mark.parametrize("mode", [FULL_DUPLEX, BUFFERED], ids=["full-duplex", "buffered"])
async def test_model_rewrite_mutates_the_body_and_its_length(upstreams, mode: int) -> None:
    a = await upstreams(models=["m2"])
    async with picker_for([a], {"gateway": {"model_rewrites": {"m": "m2"}}}, mode=mode) as p:
        s = p.stream()
        if mode == BUFFERED:
            await s.exchange(request_headers())
            (resp,) = await s.exchange(request_body(BODY, True))
            common = resp.request_body.response
            new_body = common.body_mutation.body
        else:
            await s.send(request_headers())
            hdr, body = await s.exchange(request_body(BODY, True), n=2)
            common = hdr.request_headers.response
            new_body = body.request_body.response.body_mutation.streamed_response.body
        assert orjson.loads(new_body)["model"] == "m2"
        assert set_headers(common)["content-length"] == str(len(new_body))
        s.cancel()


async def test_protocol_config_overrides_the_configured_mode(upstreams) -> None:
    a = await upstreams()
    async with picker_for([a], mode=FULL_DUPLEX) as p:
        s = p.stream()
        (first,) = await s.exchange(request_headers(mode=BUFFERED))  # Envoy says BUFFERED: headers answered now
        assert first.WhichOneof("response") == "request_headers"
        (resp,) = await s.exchange(request_body(BODY, True))
        assert set_headers(resp.request_body.response)["x-gateway-destination-endpoint"] == a.address
        s.cancel()


async def test_large_body_is_handed_back_in_bounded_chunks(upstreams) -> None:
    a = await upstreams()
    big = orjson.dumps({"model": "m", "prompt": "x" * 200_000, "max_tokens": 1})
    async with picker_for([a]) as p:
        s = p.stream()
        await s.send(request_headers())
        for i in range(0, len(big), 50_000):
            await s.send(request_body(big[i:i + 50_000], i + 50_000 >= len(big)))
        hdr = await s.recv()
        assert hdr.WhichOneof("response") == "request_headers"
        got = b""
        while True:
            sr = (await s.recv()).request_body.response.body_mutation.streamed_response
            assert len(sr.body) <= 64 * 1024
            got += sr.body
            if sr.end_of_stream:
                break
        assert got == big
        s.cancel()


async def test_sse_response_usage_frame_feeds_completion_metrics(upstreams) -> None:
    a = await upstreams()
    async with picker_for([a]) as p:
        s = p.stream()
        await s.send(request_headers(path="/v1/chat/completions"))
        chat = orjson.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        await s.exchange(request_body(chat, True), n=2)
        await s.exchange(response_headers(200, "text/event-stream"))
        ep = p.gw.store.all()[0]
        frames = [b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n', b'data: {"choices":[{"delta":{}}]}\n\n',
                  b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":2}}\n\n',
                  b"data: [DONE]\n\n"]
        (r0,) = await s.exchange(response_body(frames[0], False))
        assert r0.response_body.response.body_mutation.streamed_response.body == frames[0]
        assert ep.load.in_flight_prefill_tokens == 0 and ep.load.in_flight_requests == 1  # first token seen
        for f in frames[1:-1]:
            await s.exchange(response_body(f, False))
        await s.exchange(response_body(frames[-1], True))
        assert p.loads_all_zero()
        labels = {"model_name": "m", "target_model_name": "m"}
        reg = p.gw.metrics.registry
        assert reg.get_sample_value("inference_objective_output_tokens_sum", labels) == 2
        assert reg.get_sample_value("inference_objective_input_tokens_sum", labels) == 11
        assert reg.get_sample_value("inference_objective_request_duration_seconds_count", labels) == 1


async def test_response_served_by_a_fallback_moves_the_load_there(upstreams) -> None:
    a, b = await upstreams(), await upstreams()
    async with picker_for([a, b]) as p:
        s = p.stream()
        await s.send(request_headers())
        hdr, _ = await s.exchange(request_body(BODY, True), n=2)
        primary, fallback = set_headers(hdr.request_headers.response)["x-gateway-destination-endpoint"].split(",")
        await s.exchange(response_headers(200, served=fallback))
        assert p.load() == {primary: 0, fallback: 1}
        await s.exchange(response_body(USAGE_JSON, True))
        assert p.loads_all_zero()
        assert p.gw.metrics.registry.get_sample_value("lanterna_gateway_retries_total") == 1.0  # Envoy retried


async def test_response_headers_ending_the_stream_settle_the_request(upstreams) -> None:
    a = await upstreams()
    async with picker_for([a]) as p:
        s = p.stream()
        await s.send(request_headers())
        await s.exchange(request_body(BODY, True), n=2)
        await s.exchange(response_headers(204, end_of_stream=True))
        assert p.loads_all_zero()


async def test_non_inference_path_gets_a_least_loaded_pick_from_headers_alone(upstreams) -> None:
    a, b = await upstreams(), await upstreams()
    async with picker_for([a, b]) as p:
        p.gw.store.get(a.address).load.in_flight_requests = 3  # type: ignore[union-attr]
        s = p.stream()
        (resp,) = await s.exchange(request_headers("/v1/models", {":method": "GET"}, end_of_stream=True))
        dest = set_headers(resp.request_headers.response)["x-gateway-destination-endpoint"]
        assert dest == f"{b.address},{a.address}"
        assert destination_metadata(resp) == dest


async def test_subset_hint_restricts_the_pick(upstreams) -> None:
    a, b = await upstreams(), await upstreams()
    async with picker_for([a, b]) as p:
        for _ in range(3):
            s = p.stream()
            await s.send(request_headers(subset=[b.address]))
            hdr, _ = await s.exchange(request_body(BODY, True), n=2)
            assert set_headers(hdr.request_headers.response)["x-gateway-destination-endpoint"] == b.address
            s.cancel()
