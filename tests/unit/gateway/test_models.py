"""Several models and LoRA adapters behind one gateway: requests reach only endpoints that serve them."""

from __future__ import annotations

from tests.unit.gateway.conftest import gateway_for


async def test_requests_reach_only_endpoints_serving_their_model_or_adapter(upstreams) -> None:
    a = await upstreams(models=["base-a", "lora-x"], parents={"lora-x": "base-a"})
    b = await upstreams(models=["base-b"])
    async with gateway_for([a, b], static_models=False) as h:  # discovered from /v1/models
        async with h.http.get(h.url + "/v1/models") as r:
            listed = {m["id"]: m["parent"] for m in (await r.json())["data"]}
        assert listed == {"base-a": None, "lora-x": "base-a", "base-b": None}
        for _ in range(4):
            assert (await h.post("/v1/completions", {"model": "base-b", "prompt": "p"})).status == 200
            assert (await h.post("/v1/completions", {"model": "lora-x", "prompt": "p"})).status == 200
        assert [x["model"] for x in a.bodies] == ["lora-x"] * 4
        assert [x["model"] for x in b.bodies] == ["base-b"] * 4


async def test_model_rewrite_header_and_config_and_weighted_split(upstreams) -> None:
    a = await upstreams(models=["v1"])
    b = await upstreams(models=["v2"])
    cfg = {"gateway": {"model_rewrites": {"alias": "v1"},
                       "traffic_split": {"canary": [{"model": "v1", "weight": 3}, {"model": "v2", "weight": 1}]}},
           "auth": {"forward_model_rewrite_header": True}}
    async with gateway_for([a, b], cfg) as h:
        r = await h.post("/v1/completions", {"model": "whatever", "prompt": "p"},
                         headers={"x-gateway-model-name-rewrite": "v2"})
        assert r.status == 200 and b.bodies[-1]["model"] == "v2"
        assert (await h.post("/v1/completions", {"model": "alias", "prompt": "p"})).status == 200
        assert a.bodies[-1]["model"] == "v1"
        a.bodies.clear()
        b.bodies.clear()
        for _ in range(200):
            assert (await h.post("/v1/completions", {"model": "canary", "prompt": "p"})).status == 200
        assert 110 < len(a.bodies) < 185 and len(a.bodies) + len(b.bodies) == 200


async def test_missing_model_uses_the_only_base_model(upstreams) -> None:
    a = await upstreams(models=["only"])
    async with gateway_for([a]) as h:
        assert (await h.post("/v1/completions", {"prompt": "p"})).status == 200
        assert a.bodies[-1]["model"] == "only"


async def test_health_and_debug(upstreams) -> None:
    a = await upstreams()
    async with gateway_for([a]) as h:
        async with h.http.get(h.url + "/health") as r:
            assert r.status == 200 and (await r.json())["ready_endpoints"] == 1
        async with h.http.get(h.url + "/debug/endpoints") as r:
            (ep,) = (await r.json())["endpoints"]
            assert ep["id"] == a.address and ep["healthy"]


async def test_model_rewrite_header_from_a_client_is_ignored_by_default(upstreams) -> None:
    """The GAIE rewrite header is the platform's; a client sending it does not pick another model."""
    a = await upstreams(models=["v1"])
    b = await upstreams(models=["v2"])
    async with gateway_for([a, b]) as h:
        r = await h.post("/v1/completions", {"model": "v1", "prompt": "p"}, headers={"x-gateway-model-name-rewrite": "v2"})
        assert r.status == 200 and a.bodies[-1]["model"] == "v1" and not b.bodies
        assert "x-gateway-model-name-rewrite" not in {k.lower() for k in a.headers[-1]}
