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
        assert "x-prefiller-host-port" not in dc.headers[0]  # placement gateway: no sidecar may prefill again
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
        assert _sample(h, "lanterna_gateway_pd_prefill_fallbacks_total", reason="http_5xx") == 1


def _sample(h: object, name: str, **labels: str) -> float:
    v = h.gw.metrics.registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return 0.0 if v is None else float(v)


def _pd_cfg(pf: object, dc: object, placement: str) -> dict[str, object]:
    return {"scheduler": PD, "gateway": {"pd": {"placement": placement}}, "endpoints": {"static": [
        {"address": pf.address, "models": ["m"], "labels": {"llm-d.ai/role": "prefill"}},  # type: ignore[attr-defined]
        {"address": dc.address, "models": ["m"], "labels": {"llm-d.ai/role": "decode"}}]}}  # type: ignore[attr-defined]


async def test_sidecar_placement_only_names_the_prefiller(upstreams) -> None:
    """Placement sidecar: the gateway sends no prefill; the decode request carries x-prefiller-host-port."""
    pf, dc = await upstreams(), await upstreams()
    async with gateway_for([], _pd_cfg(pf, dc, "sidecar")) as h:
        body = {"model": "m", "prompt": "long prompt " * 40, "max_tokens": 5}
        r = await h.post("/v1/completions", body, headers={"x-prefiller-host-port": "169.254.169.254:80"})
        assert r.status == 200
        assert pf.hits == 0
        assert dc.headers[0]["x-prefiller-host-port"] == pf.address  # the gateway's pick, never the client's
        assert dc.bodies[0] == body
        assert _sample(h, "llm_d_inference_scheduler_disagg_decision_total", model_name="m",
                       decision_type="prefill-decode") == 1


async def test_gateway_placement_strips_a_client_prefiller_header(upstreams) -> None:
    pf, dc = await upstreams(), await upstreams()
    async with gateway_for([], _pd_cfg(pf, dc, "gateway")) as h:
        r = await h.post("/v1/completions", {"model": "m", "prompt": "x", "max_tokens": 5},
                         headers={"x-prefiller-host-port": "169.254.169.254:80"})
        assert r.status == 200
        assert all("x-prefiller-host-port" not in hd for hd in pf.headers + dc.headers)
