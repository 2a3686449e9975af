"""traceparent in, spans with the right parent, the same trace id out (OTel SDK in-memory exporter), and
the pass-through mode without spans."""

from __future__ import annotations

import pytest

from lanterna.obs.tracing import Tracer, valid_traceparent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TP = f"00-{TRACE_ID}-{PARENT}-01"


@pytest.mark.parametrize(("value", "ok"), [
    (TP, True),
    (f"01-{TRACE_ID}-{PARENT}-01-future", True),
    (f"00-{TRACE_ID}-{PARENT}-01-extra", False),
    (f"ff-{TRACE_ID}-{PARENT}-01", False),
    (f"00-{'0' * 32}-{PARENT}-01", False),
    (f"00-{TRACE_ID}-{'0' * 16}-01", False),
    (TP.upper(), False),
    ("garbage", False),
    (None, False),
], ids=["v00", "future-version", "v00-extra", "ff", "zero-trace", "zero-span", "uppercase", "garbage", "none"])
def test_valid_traceparent(value: str | None, ok: bool) -> None:
    assert valid_traceparent(value) is ok


def test_pass_through_forwards_valid_context_unchanged() -> None:
    tracer = Tracer(enabled=False)
    trace = tracer.start_request({"traceparent": TP, "tracestate": "congo=t61rcWkgMzE"})
    with trace.span("schedule") as s:
        s.set("lanterna.endpoint", "a:1")
    out: dict[str, str] = {}
    trace.inject(out)
    trace.end(status=200)
    assert out == {"traceparent": TP, "tracestate": "congo=t61rcWkgMzE"}
    assert trace.trace_id == TRACE_ID and not tracer.recording


def test_pass_through_drops_invalid_context() -> None:
    trace = Tracer(enabled=False).start_request({"traceparent": "00-xyz", "tracestate": "a=b"})
    out: dict[str, str] = {}
    trace.inject(out)
    assert out == {} and trace.trace_id is None


def _sdk():  # type: ignore[no-untyped-def]
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_otel_spans_parented_on_incoming_traceparent_and_injected_upstream() -> None:
    provider, exporter = _sdk()
    tracer = Tracer(enabled=True, tracer_provider=provider)
    assert tracer.recording
    trace = tracer.start_request({"traceparent": TP, "tracestate": "congo=t61rcWkgMzE"}, "POST /v1/completions")
    with trace.span("admission"):
        pass
    with trace.span("schedule") as s:
        s.set("lanterna.endpoint", "10.0.0.7:8000")
    upstream_headers: dict[str, str] = {}
    with trace.span("upstream", {"gen_ai.request.model": "m"}) as s:
        trace.inject(upstream_headers)
        s.set("http.response.status_code", 200)
        s.set("gen_ai.usage.output_tokens", 64)
    trace.end(status=200, attrs={"gen_ai.usage.input_tokens": 812})
    trace.end(status=500)  # idempotent: the second call changes nothing

    spans = {sp.name: sp for sp in exporter.get_finished_spans()}
    assert set(spans) == {"admission", "schedule", "upstream", "POST /v1/completions"}
    root = spans["POST /v1/completions"]
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    assert f"{root.parent.span_id:016x}" == PARENT and root.parent.is_remote
    for name in ("admission", "schedule", "upstream"):
        assert spans[name].parent.span_id == root.context.span_id
        assert spans[name].context.trace_id == root.context.trace_id
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["gen_ai.usage.input_tokens"] == 812
    assert spans["schedule"].attributes["lanterna.endpoint"] == "10.0.0.7:8000"
    up = spans["upstream"]
    assert up.attributes["gen_ai.request.model"] == "m" and up.attributes["gen_ai.usage.output_tokens"] == 64
    # the upstream request carries the same trace, parented on the upstream span, and the client's tracestate
    version, trace_id, span_id, flags = upstream_headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert span_id == f"{up.context.span_id:016x}"
    assert upstream_headers["tracestate"] == "congo=t61rcWkgMzE"


def test_otel_new_trace_without_incoming_context_and_error_status() -> None:
    provider, exporter = _sdk()
    trace = Tracer(enabled=True, tracer_provider=provider).start_request({}, "POST /v1/completions")
    with pytest.raises(RuntimeError), trace.span("upstream"):
        raise RuntimeError("boom")
    out: dict[str, str] = {}
    trace.inject(out)  # after the span closed: the request span's context
    trace.end(status=502, error="UpstreamFailed")
    spans = {sp.name: sp for sp in exporter.get_finished_spans()}
    root = spans["POST /v1/completions"]
    assert root.parent is None and valid_traceparent(out["traceparent"])
    assert out["traceparent"].split("-")[2] == f"{root.context.span_id:016x}"
    assert not spans["upstream"].status.is_ok and not root.status.is_ok
    assert spans["upstream"].events[0].name == "exception"


async def test_gateway_middleware_ends_server_span_with_error_status() -> None:
    """Real aiohttp app on loopback: the middleware's server span takes the client's trace id and the
    LanternaError's status; a handler's upstream span injected into headers carries the same trace."""
    provider, exporter = _sdk()
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from lanterna.errors import NoCapacity
    from lanterna.gateway.middleware import error_middleware
    from lanterna.gateway.tracing import enable_tracing, request_trace

    seen: dict[str, str] = {}

    async def ok(request: web.Request) -> web.Response:
        trace = request_trace(request)
        with trace.span("upstream"):
            trace.inject(seen)
        return web.Response(text="ok")

    async def full(request: web.Request) -> web.Response:
        raise NoCapacity("no endpoints")

    app = web.Application(middlewares=[error_middleware])
    assert enable_tracing(app, Tracer(enabled=True, tracer_provider=provider))
    app.router.add_post("/ok", ok)
    app.router.add_post("/full", full)
    async with TestClient(TestServer(app)) as client:
        assert (await client.post("/ok", headers={"traceparent": TP})).status == 200
        assert (await client.post("/full")).status == 503
    spans = exporter.get_finished_spans()
    roots = {sp.name: sp for sp in spans if sp.kind.name == "SERVER"}
    assert f"{roots['POST /ok'].context.trace_id:032x}" == TRACE_ID == seen["traceparent"].split("-")[1]
    assert roots["POST /ok"].attributes["http.response.status_code"] == 200
    assert roots["POST /full"].attributes["http.response.status_code"] == 503
    assert not roots["POST /full"].status.is_ok


async def test_request_trace_without_middleware_passes_through() -> None:
    from aiohttp.test_utils import make_mocked_request

    from lanterna.gateway.tracing import request_trace

    out: dict[str, str] = {}
    request_trace(make_mocked_request("POST", "/", headers={"traceparent": TP})).inject(out)
    assert out == {"traceparent": TP}
