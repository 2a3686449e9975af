"""Pure gateway pieces: load tickets, circuit breaker, attempt order, request parsing."""

from __future__ import annotations

import pytest

from lanterna.endpoints.types import Endpoint
from lanterna.errors import UpstreamFailed, ValidationFailed
from lanterna.gateway.streaming import error_frame, usage_from_tail
from lanterna.routing.accounting import LoadTicket
from lanterna.routing.fields import parse_body, priority_for, prompt_text, prompt_token_ids, rewrite_body
from lanterna.routing.retries import CLOSED, HALF_OPEN, OPEN, Breakers, CircuitBreaker, attempt_order


def test_load_ticket_lifecycle_is_idempotent() -> None:
    ep = Endpoint("a", "a:1")
    t = LoadTicket(ep, prompt_tokens=100, max_tokens=20)
    assert (ep.load.in_flight_requests, ep.load.in_flight_prefill_tokens, ep.load.in_flight_kv_tokens) == (1, 100, 120)
    t.first_token()
    t.first_token()
    assert ep.load.in_flight_prefill_tokens == 0 and ep.load.in_flight_requests == 1
    t.release()
    t.release()
    assert (ep.load.in_flight_requests, ep.load.in_flight_decode_seqs, ep.load.in_flight_kv_tokens) == (0, 0, 0)


def test_load_ticket_release_without_first_token_frees_prefill() -> None:
    ep = Endpoint("a", "a:1")
    with LoadTicket(ep, 50, 5):
        pass
    assert ep.load.in_flight_prefill_tokens == 0 and ep.load.in_flight_requests == 0


def test_load_ticket_counts_adapters_in_flight_and_drops_them_at_zero() -> None:
    ep = Endpoint("a", "a:1")
    t1, t2 = LoadTicket(ep, 10, 1, lora="ad1"), LoadTicket(ep, 10, 1, lora="ad1")
    with LoadTicket(ep, 10, 1, lora="ad2"), LoadTicket(ep, 10, 1):
        assert ep.load.in_flight_adapters == {"ad1": 2, "ad2": 1}
    t1.release()
    t1.release()
    assert ep.load.in_flight_adapters == {"ad1": 1}
    t2.release()
    assert ep.load.in_flight_adapters == {}


def test_circuit_breaker_state_machine() -> None:
    b = CircuitBreaker(failure_threshold=2, open_s=10.0)
    assert not b.on_failure(0.0) and b.state == CLOSED
    assert b.on_failure(1.0) and b.state == OPEN
    assert not b.available(5.0)
    assert b.available(11.0)
    b.begin(11.0)
    assert b.state == HALF_OPEN and not b.available(11.5)  # only one probe
    assert b.on_failure(12.0) and b.state == OPEN  # the probe failed: open again
    b.begin(22.5)
    b.on_success()
    assert b.state == CLOSED and b.failures == 0


def test_breakers_never_filter_everything_out() -> None:
    eps = [Endpoint("a", "a:1"), Endpoint("b", "b:1")]
    br = Breakers(failure_threshold=1, open_s=100)
    br.get("a").on_failure(0.0)
    assert [e.id for e in br.allowed(eps, 1.0)] == ["b"]
    br.get("b").on_failure(0.0)
    assert [e.id for e in br.allowed(eps, 1.0)] == ["a", "b"]


def test_attempt_order_picks_then_least_loaded() -> None:
    a, b, c = Endpoint("a", "a:1"), Endpoint("b", "b:1"), Endpoint("c", "c:1")
    b.load.in_flight_requests = 5
    assert [e.id for e in attempt_order([b], [a, b, c], 3)] == ["b", "a", "c"]
    assert [e.id for e in attempt_order([c, c], [a, b, c], 2)] == ["c", "a"]


def test_chat_prompt_text_covers_every_message_not_just_the_system_prompt() -> None:
    def body(user: str) -> bytes:
        return (b'{"model":"m","messages":[{"role":"system","content":"You are helpful."},'
                b'{"role":"user","content":"' + user.encode() + b'"}]}')

    a, b = (prompt_text(parse_body(body(u), "chat"), "chat") for u in ("alpha", "beta"))
    assert a != b and a.startswith('[{"role":"system"') and "alpha" in a


def test_completions_prompt_forms() -> None:
    f = parse_body(b'{"model":"m","prompt":"hi \\"there\\"","max_tokens":4,"stream":true}', "completions")
    assert prompt_text(f, "completions") == 'hi "there"' and f.stream and f.max_tokens == 4
    g = parse_body(b'{"model":"m","prompt":[1,2,3]}', "completions")
    assert prompt_token_ids(g, "completions") == [1, 2, 3]


@pytest.mark.parametrize("raw", [b"{", b"[]", b'{"model": 3, "prompt": "x"}', b'{"model": "m"}'],
                         ids=["truncated", "array", "model-not-string", "no-prompt"])
def test_bad_bodies_raise_validation_errors(raw: bytes) -> None:
    with pytest.raises(ValidationFailed):
        parse_body(raw, "completions")


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"model":"m","prompt":"x","max_tokens":"ten"}', "body.max_tokens"),
    (b'{"model":3,"prompt":"x"}', "body.model"),
    (b'{"model":"m","prompt":"x","stream":"yes"}', "body.stream"),
    (b"{", "body"),
])
def test_bad_field_names_its_param(raw: bytes, param: str) -> None:
    """A wrong type names the field (msgspec's ValidationError subclasses DecodeError: order matters)."""
    with pytest.raises(ValidationFailed) as info:
        parse_body(raw, "completions")
    assert info.value.param == param


def test_priority_from_objective() -> None:
    assert priority_for("critical", {"critical": 10}) == 10
    assert priority_for("-1", {}) == -1
    assert priority_for("unknown", {}) == 0
    assert priority_for(None, {}) == 0


def test_rewrite_body_sets_and_removes_fields() -> None:
    import msgspec

    out = msgspec.json.decode(rewrite_body(b'{"model":"a","stream_options":{"x":1},"n":1}', model="b", stream_options=None))
    assert out == {"model": "b", "n": 1}


def test_usage_from_stream_tail_and_error_frame() -> None:
    tail = (b'data: {"choices":[{"text":"x"}]}\n\n'
            b'data: {"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":3,'
            b'"prompt_tokens_details":{"cached_tokens":4}}}\n\ndata: [DONE]\n\n')
    u = usage_from_tail(tail)
    assert u is not None and (u.prompt_tokens, u.completion_tokens, u.cached_tokens) == (8, 3, 4)
    assert usage_from_tail(b"data: [DONE]\n\n") is None
    frame = error_frame(UpstreamFailed("gone"))
    assert frame.startswith(b'data: {"error":{"message":"gone","type":"BadGatewayError"')
    assert frame.endswith(b"\n\ndata: [DONE]\n\n")


def test_pool_saturation_is_cached_at_scrape_time_and_clearing_pokes_flow() -> None:
    from lanterna.config.model import LanternaConfig
    from lanterna.gateway.app import create_gateway

    gw = create_gateway(LanternaConfig.model_validate({"endpoints": {"static": [{"address": "a:1", "models": ["m"]}]}}))
    ep = gw.store.get("a:1")
    pokes = []
    gw.flow.poke = lambda: pokes.append(1)  # type: ignore[union-attr]
    ep.metrics.kv_cache_usage, ep.metrics.scraped_at = 0.9, gw.clock.now()
    assert not gw.pool_saturated()  # cached: nothing recomputed until a scrape says so
    gw.refresh_saturation(ep)
    assert gw.pool_saturated() and not pokes
    ep.metrics.kv_cache_usage = 0.1
    gw.refresh_saturation(ep)
    assert not gw.pool_saturated() and pokes == [1]  # queued requests are woken at once
    ep.metrics.kv_cache_usage, ep.metrics.scraped_at = 0.9, gw.clock.now() - 60
    gw.refresh_saturation(ep)
    assert not gw.pool_saturated()  # stale metrics never hold requests back
