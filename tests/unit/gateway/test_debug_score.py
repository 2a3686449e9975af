"""``POST /debug/score``: per-scorer breakdown and the pick, without dispatching or disturbing routing."""

from __future__ import annotations

from tests.unit.gateway.conftest import gateway_for

EPP = {
    "apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig",
    "plugins": [{"type": "prefix-cache-scorer", "parameters": {"blockSizeTokens": 4}},
                {"type": "queue-scorer"}, {"type": "max-score-picker"}],
    "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "prefix-cache-scorer", "weight": 3},
                                                           {"pluginRef": "queue-scorer", "weight": 2},
                                                           {"pluginRef": "max-score-picker"}]}],
}
PROMPT = "a prompt long enough to fill several prefix blocks " * 10


async def test_score_breaks_totals_down_by_scorer_and_dispatches_nothing(upstreams) -> None:
    x, y = await upstreams(), await upstreams()
    async with gateway_for([x, y], {"scheduler": EPP, "endpoints": {"health_interval_s": 3600}}) as h:
        r = await h.post("/v1/completions", {"model": "m", "prompt": PROMPT, "max_tokens": 1})
        warm = r.headers["x-gateway-destination-endpoint"]
        cold = y.address if warm == x.address else x.address
        served = x.hits + y.hits
        rng_before = h.gw.scheduler.rng.getstate()

        r = await h.post("/debug/score", {"model": "m", "prompt": PROMPT})
        assert r.status == 200
        out = await r.json()
        assert x.hits + y.hits == served  # nothing dispatched
        assert h.gw.scheduler.rng.getstate() == rng_before  # later picks are unaffected
        assert out["model"] == "m" and sorted(out["candidates"]) == sorted([x.address, y.address])
        prof = out["profiles"]["default"]
        rows = prof["endpoints"]
        assert rows[warm]["scores"]["prefix-cache-scorer"]["raw"] > 0.9
        assert rows[cold]["scores"]["prefix-cache-scorer"]["raw"] == 0.0
        for eid, row in rows.items():
            assert row["scores"]["queue-scorer"]["weight"] == 2
            parts = sum(s["weighted"] for s in row["scores"].values())
            assert abs(parts - row["total"]) < 1e-9 and abs(row["total"] - prof["totals"][eid]) < 1e-9
        assert out["pick"] == warm == prof["targets"][0] and out["primary_profile"] == "default"

        r = await h.post("/debug/score?model=m", {"messages": [{"role": "user", "content": "hi"}]})
        assert r.status == 200 and (await r.json())["kind"] == "chat"
        r = await h.post("/debug/score", {"model": "nope", "prompt": "x"})
        assert r.status == 404 and (await r.json())["error"]["type"] == "NotFoundError"
