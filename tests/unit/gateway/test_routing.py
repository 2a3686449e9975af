"""Routing through the gateway with llm-d's approximate prefix scorer: whole-conversation prefixes, bounded index."""

from __future__ import annotations

from tests.unit.gateway.conftest import gateway_for


def _prefix_only(capacity: int) -> dict:
    return {
        "apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig",
        "plugins": [{"type": "prefix-cache-scorer",
                     "parameters": {"blockSizeTokens": 4, "lruCapacityPerServer": capacity}}],
        "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "prefix-cache-scorer"}]}],
    }


SYSTEM = {"role": "system", "content": "You are a careful assistant. " * 8}


def _conv(name: str, turns: int) -> list[dict[str, str]]:
    msgs = [SYSTEM]
    for i in range(turns):
        msgs += [{"role": "user", "content": f"{name} question {i}: " + name * 40},
                 {"role": "assistant", "content": f"{name} answer {i}: " + name * 40}]
    return msgs


async def test_chat_follow_ups_go_where_their_own_history_went_not_where_the_system_prompt_went(upstreams) -> None:
    x, y = await upstreams(), await upstreams()
    cfg = {"scheduler": _prefix_only(10_000), "endpoints": {"health_interval_s": 3600}}
    async with gateway_for([x, y], cfg) as h:
        ex, ey = h.gw.store.get(x.address), h.gw.store.get(y.address)
        # Conversation A reaches only x, conversation B only y (the other endpoint is marked down meanwhile).
        h.gw.store.set_healthy(ey, False)
        assert (await h.post("/v1/chat/completions", {"model": "m", "messages": _conv("alpha", 2)})).status == 200
        h.gw.store.set_healthy(ey, True)
        h.gw.store.set_healthy(ex, False)
        assert (await h.post("/v1/chat/completions", {"model": "m", "messages": _conv("bravo", 2)})).status == 200
        h.gw.store.set_healthy(ex, True)
        for turn in range(3, 7):  # both share the system prompt; only the history tells them apart
            ra = await h.post("/v1/chat/completions", {"model": "m", "messages": _conv("alpha", turn)})
            rb = await h.post("/v1/chat/completions", {"model": "m", "messages": _conv("bravo", turn)})
            assert ra.headers["x-gateway-destination-endpoint"] == x.address
            assert rb.headers["x-gateway-destination-endpoint"] == y.address


async def test_prefix_index_stays_bounded_under_many_distinct_prompts(upstreams) -> None:
    x = await upstreams()
    async with gateway_for([x], {"scheduler": _prefix_only(16)}) as h:
        for i in range(60):
            prompt = f"distinct prompt number {i} " * 20
            assert (await h.post("/v1/completions", {"model": "m", "prompt": prompt, "max_tokens": 1})).status == 200
        index = h.gw.scheduler.plugin("prefix-cache-scorer").index
        assert 0 < index.num_entries(x.address) <= 16
