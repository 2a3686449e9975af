"""Prefill/decode disaggregation through the gateway (PROTOCOLS.md section 4)."""

from __future__ import annotations

from tests.unit.gateway.conftest import gateway_for

PD = {
    "apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig",
    "plugins": [
        {"type": "prefill-filter"}, {"type": "decode-filter"}, {"type": "queue-scorer"},
        {"type": "max-score-picker"},
        {"type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": 1}},
        {"type": "disagg-profile-handler"},
    ],
    "schedulingProfiles": [
        {"name": "prefill", "plugins": [{"pluginRef": "prefill-filter"}, {"pluginRef": "queue-scorer"},
                                        {"pluginRef": "max-score-picker"}]},
        {"name": "decode", "plugins": [{"pluginRef": "decode-filter"}, {"pluginRef": "queue-scorer"},
                                       {"pluginRef": "max-score-picker"}]},
    ],
}


async def test_prefill_then_decode_with_returned_kv_transfer_params(upstreams) -> None:
    pf, dc = await upstreams(), await upstreams()
    cfg = {"scheduler": PD, "endpoints": {"static": [
        {"address": pf.address, "models": ["m"], "labels": {"llm-d.ai/role": "prefill"}},
        {"address": dc.address, "models": ["m"], "labels": {"llm-d.ai/role": "decode"}}]}}
    async with gateway_for([], cfg) as h:
        r = await h.post("/v1/chat/completions", {"model": "m", "stream": True, "max_completion_tokens": 50,
                                                  "stream_options": {"include_usage": True},
                                                  "messages": [{"role": "user", "content": "a fairly long prompt " * 20}]})
        assert r.status == 200
        assert (await r.read()).endswith(b"data: [DONE]\n\n")
        assert r.headers["x-gateway-destination-endpoint"] == dc.address
        (pbody,) = pf.bodies
        assert pbody["kv_transfer_params"]["do_remote_decode"] is True
        assert pbody["kv_transfer_params"]["do_remote_prefill"] is False
        assert pbody["stream"] is False and "stream_options" not in pbody
        assert pbody["max_tokens"] == 1 and pbody["max_completion_tokens"] == 1
        (dbody,) = dc.bodies
        assert dbody["kv_transfer_params"] == {"remote_block_ids": [1, 2]}
        assert dbody["stream"] is True and dbody["max_completion_tokens"] == 50
        assert dc.headers[0]["x-prefiller-host-port"] == pf.address
        assert all(v["in_flight_requests"] == 0 for v in (await h.load()).values())


async def test_prefill_failure_falls_back_to_local_prefill(upstreams) -> None:
    pf, dc = await upstreams(mode="status", status=500), await upstreams()
    cfg = {"scheduler": PD, "endpoints": {"static": [
        {"address": pf.address, "models": ["m"], "labels": {"llm-d.ai/role": "prefill"}},
        {"address": dc.address, "models": ["m"], "labels": {"llm-d.ai/role": "decode"}}]}}
    async with gateway_for([], cfg) as h:
        r = await h.post("/v1/completions", {"model": "m", "prompt": "long prompt " * 40, "max_tokens": 5})
        assert r.status == 200
        assert "kv_transfer_params" not in dc.bodies[0] and pf.hits == 1
