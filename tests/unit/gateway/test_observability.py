"""Observability read back through a real gateway app (loopback client; upstreams are the in-memory transport):
one access-log line per request with every field, traceparent reaching the upstream, spans with the right
parents (OpenTelemetry SDK in-memory exporter), and the GAIE metrics in /metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lanterna.config.model import LanternaConfig
from lanterna.gateway.app import build_app, create_gateway, serve
from lanterna.gateway.memory_transport import MemoryTransport, Scripted
from lanterna.gateway.reload import build_scheduler
from lanterna.gateway.state import Gateway
from lanterna.obs.access import AccessLog, AccessRecord
from lanterna.obs.tracing import Tracer
from lanterna.scheduler import default_epp_config
from tests.conftest import free_port
from tests.unit.gateway.fake_upstream import pin_targets

A, B, DOWN = "127.0.0.1:9", "127.0.0.1:11", "127.0.0.1:13"  # nothing listens: health checks fail fast
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}
OK = Scripted.json(msgspec.json.encode({"id": "c", "choices": [{"text": "xyz"}], "usage": USAGE}))
BOOM = Scripted.json(b'{"error": {"message": "boom"}}', status=500)
FRAMES = [b'data: {"choices": [{"text": "a"}]}\n\n', b'data: {"choices": [{"text": "b"}]}\n\n',
          b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}\n\n', b"data: [DONE]\n\n"]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TP = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
FIELDS = list(AccessRecord.__struct_fields__)


class Lines(logging.Handler):
    """Collects access-log lines; ``wait(n)`` returns once ``n`` arrived (no polling)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(msgspec.json.decode(record.getMessage()))
        self._changed.set()

    async def wait(self, n: int) -> list[dict[str, Any]]:
        async with asyncio.timeout(5):
            while len(self.lines) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.lines


@dataclass
class Obs:
    gw: Gateway
    t: MemoryTransport
    http: aiohttp.ClientSession
    url: str
    log: Lines
    ids: list[str] = field(default_factory=list)

    async def post(self, body: Any, path: str = "/v1/completions", **kw: Any) -> aiohttp.ClientResponse:
        r = await self.http.post(self.url + path, data=body if isinstance(body, bytes) else None,
                                 json=None if isinstance(body, bytes) else body, **kw)
        self.ids.append(r.headers["x-request-id"])
        return r

    def pin(self, *addresses: str) -> None:
        pin_targets(self.gw.scheduler, *addresses)

    def metric(self, text: str, name: str, **labels: str) -> float:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        raise KeyError(name)


@asynccontextmanager
async def obs_gateway(tracer: Tracer | None = None, plugin_timing_every: int = 1,
                      auth: dict[str, Any] | None = None) -> AsyncIterator[Obs]:
    tree: dict[str, Any] = {"auth": auth or {}, "gateway": {"timeouts": {"first_byte_s": 5.0, "connect_s": 0.5},
                                                            "plugin_timing_every": plugin_timing_every},
                            "endpoints": {"static": [{"address": A, "models": ["m"]}, {"address": B, "models": ["m"]},
                                                     {"address": DOWN, "models": ["other"]}],
                                          "health_interval_s": 3600, "scrape_interval_s": 3600,
                                          "scrape_timeout_s": 0.2}}
    lines = Lines()
    logger = logging.getLogger(f"test.access.{id(lines)}")
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    t = MemoryTransport(idle_s=5)
    gw = create_gateway(LanternaConfig.model_validate(tree), transport=t, access_log=AccessLog("json", logger),
                        tracer=tracer)
    port = free_port()
    runner = await serve(build_app(gw), "127.0.0.1", port)
    gw.store.get(DOWN).healthy = False  # type: ignore[union-attr]  # model "other": known, nothing ready (503)
    try:
        async with aiohttp.ClientSession() as http:
            yield Obs(gw, t, http, f"http://127.0.0.1:{port}", lines)
    finally:
        await runner.cleanup()
        logger.removeHandler(lines)


async def test_one_access_line_per_request_with_every_field() -> None:
    async with obs_gateway() as h:
        h.t.script(A, BOOM, OK)
        h.t.script(B, OK)
        h.pin(A, B)
        hdrs = {"x-gateway-inference-fairness-id": "tenant-a", "x-gateway-inference-objective": "-1"}
        r = await h.post({"model": "m", "prompt": "hi", "max_tokens": 3}, headers=hdrs)  # A 500 -> B 200
        assert r.status == 200
        h.t.script(A, Scripted.sse(FRAMES))
        r = await h.post({"model": "m", "prompt": "hi", "stream": True})
        assert r.status == 200 and (await r.read()).endswith(b"data: [DONE]\n\n")
        r = await h.post(b"{not json")
        assert r.status == 400
        r = await h.post({"model": "nope", "prompt": "x"})
        assert r.status == 404
        r = await h.post({"model": "other", "prompt": "x", "stream": True}, path="/v1/chat/completions")
        assert r.status == 400  # chat without messages: refused while parsing
        r = await h.post({"model": "other", "messages": [{"role": "user", "content": "x"}]},
                         path="/v1/chat/completions")
        assert r.status == 503

        lines = await h.log.wait(6)
        assert [ln["request_id"] for ln in lines] == h.ids  # one line each, in order
        assert all(list(ln) == FIELDS for ln in lines)
        ok, stream, bad, missing, bad_chat, busy = lines
        assert {k: ok[k] for k in ("method", "path", "status", "model", "adapter", "endpoint", "prefill_endpoint",
                                   "prompt_tokens", "cached_tokens", "output_tokens", "retries",
                                   "stream", "fairness_id", "priority", "client", "error")} == {
            "method": "POST", "path": "/v1/completions", "status": 200, "model": "m", "adapter": None,
            "endpoint": B, "prefill_endpoint": None, "prompt_tokens": 7, "cached_tokens": 4, "output_tokens": 3, "retries": 1, "stream": False,
            "fairness_id": "anonymous/tenant-a", "priority": -1, "client": "127.0.0.1", "error": None}
        assert isinstance(ok["profile"], str) and ok["profile"] and 0 < ok["ttft_ms"] <= ok["duration_ms"] and ok["ts"] > 1.6e9
        assert (stream["stream"], stream["endpoint"], stream["output_tokens"], stream["retries"]) == (True, A, 2, 0)
        assert stream["ttft_ms"] is not None and stream["fairness_id"] == "anonymous"
        assert (bad["status"], bad["error"], bad["model"], bad["endpoint"], bad["ttft_ms"]) == (
            400, "Bad Request", None, None, None)
        assert (missing["status"], missing["error"], missing["model"]) == (404, "NotFoundError", "nope")
        assert (bad_chat["status"], bad_chat["path"], bad_chat["model"], bad_chat["stream"]) == (
            400, "/v1/chat/completions", None, False)  # the body did not parse for chat: nothing known
        assert (busy["status"], busy["error"], busy["model"]) == (503, "no-ready-endpoint", "other")
        assert all(ln["duration_ms"] >= 0 and ln["client"] == "127.0.0.1" for ln in lines)


async def test_requests_the_auth_middleware_refuses_get_one_line_each() -> None:
    """401 (no key, wrong key) and 429 (request rate) never reach the handler; each still logs one line."""
    from lanterna.auth.keys import hash_key

    auth = {"enabled": True, "reload_s": 0, "keys": [{"hash": hash_key("k1"), "tenant": "acme", "name": "k1",
                                                      "max_priority": 5, "requests_per_s": 0.01, "burst": 1}]}
    async with obs_gateway(auth=auth) as h:
        h.t.script(A, OK)
        h.t.script(B, OK)
        body = {"model": "m", "prompt": "hi", "max_tokens": 3}
        assert (await h.post(body)).status == 401
        assert (await h.post(body, headers={"authorization": "Bearer wrong"})).status == 401
        key = {"authorization": "Bearer k1", "x-gateway-inference-objective": "99"}
        assert (await h.post(body, headers=key)).status == 200
        assert (await h.post(body, headers=key, path="/v1/chat/completions")).status == 429
        lines = await h.log.wait(4)
        assert [ln["request_id"] for ln in lines] == h.ids
        assert [(ln["status"], ln["path"]) for ln in lines] == [
            (401, "/v1/completions"), (401, "/v1/completions"), (200, "/v1/completions"), (429, "/v1/chat/completions")]
        assert lines[0]["fairness_id"] == "anonymous" and lines[3]["fairness_id"] == "acme"
        assert lines[2]["priority"] == lines[3]["priority"] == 5  # capped by the key's ceiling


async def test_client_disconnects_log_once_before_and_after_the_headers() -> None:
    async with obs_gateway() as h:
        never, arrived = asyncio.Event(), asyncio.Event()
        h.t.script(A, Scripted.json(b"{}", head_gate=never, arrived=arrived))
        h.pin(A)
        task = asyncio.create_task(h.http.post(h.url + "/v1/completions", json={"model": "m", "prompt": "x"}))
        await arrived.wait()
        task.cancel()  # the client leaves while the upstream has not answered
        [gone] = await h.log.wait(1)
        assert (gone["status"], gone["error"], gone["endpoint"]) == (499, "client_disconnected", None)

        gate, arrived2 = asyncio.Event(), asyncio.Event()
        h.t.script(A, Scripted.sse([FRAMES[0], gate, *FRAMES[1:]], arrived=arrived2))
        async with h.http.post(h.url + "/v1/completions", json={"model": "m", "prompt": "x", "stream": True}) as r:
            assert r.status == 200
            await r.content.readuntil(b"\n\n")  # first frame in hand
            r.connection.transport.close()  # type: ignore[union-attr]  # the client goes away mid-stream
        gate.set()
        lines = await h.log.wait(2)
        mid = lines[1]
        assert (mid["status"], mid["error"], mid["endpoint"], mid["stream"]) == (200, "client_disconnected", A, True)
        await asyncio.sleep(0)
        assert len(h.log.lines) == 2


async def test_traceparent_passes_through_to_the_upstream_when_tracing_is_off() -> None:
    async with obs_gateway() as h:
        h.t.script(A, OK)
        h.pin(A)
        await h.post({"model": "m", "prompt": "x"}, headers={"traceparent": TP, "tracestate": "congo=t61"})
        await h.post({"model": "m", "prompt": "x"}, headers={"traceparent": "00-bad", "tracestate": "a=b"})
        await h.post({"model": "m", "prompt": "x"})
        first, bad, none = (s.headers for s in h.t.sent)
        assert (first["traceparent"], first["tracestate"]) == (TP, "congo=t61")
        assert "traceparent" not in bad and "tracestate" not in bad  # invalid context is dropped, not forwarded
        assert "traceparent" not in none


async def test_spans_join_the_client_trace_and_the_upstream_gets_the_upstream_span() -> None:
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with obs_gateway(Tracer(enabled=True, tracer_provider=provider)) as h:
        h.t.script(A, BOOM)
        h.t.script(B, OK)
        h.pin(A, B)
        r = await h.post({"model": "m", "prompt": "x"}, headers={"traceparent": TP})
        assert r.status == 200
        await h.log.wait(1)
    spans = exporter.get_finished_spans()
    [root] = [s for s in spans if s.name == "POST /v1/completions"]
    assert f"{root.context.trace_id:032x}" == TRACE_ID and root.parent is not None and root.parent.is_remote
    assert root.attributes["http.response.status_code"] == 200 and root.attributes["lanterna.endpoint"] == B
    by_name: dict[str, list[Any]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    assert len(by_name["admission"]) == 1 and len(by_name["schedule"]) == 1 and len(by_name["upstream"]) == 2
    for s in spans:
        if s is not root:
            assert s.parent.span_id == root.context.span_id and s.context.trace_id == root.context.trace_id
    assert by_name["schedule"][0].attributes["lanterna.endpoint"] == A
    # each attempt's request carries its own upstream span as parent, in the client's trace
    for sent, span in zip(h.t.sent, by_name["upstream"], strict=True):
        _, tid, sid, _ = sent.headers["traceparent"].split("-")
        assert tid == TRACE_ID and sid == f"{span.context.span_id:016x}"
        assert span.attributes["server.address"] == sent.address
    assert [s.attributes["http.response.status_code"] for s in by_name["upstream"]] == [500, 200]


async def test_gaie_metrics_have_values_after_requests() -> None:
    async with obs_gateway() as h:
        h.t.script(A, OK)
        h.t.script(B, Scripted.sse(FRAMES))
        plain, streamed = b'{"model":"m","prompt":"hello"}', b'{"model":"m","prompt":"hello","stream":true}'
        h.pin(A)
        for _ in range(2):
            assert (await h.post(plain)).status == 200
        h.pin(B)
        assert (await h.post(streamed)).status == 200
        assert (await h.post({"model": "nope", "prompt": "x"})).status == 404
        text = await (await h.http.get(h.url + "/metrics")).text()
    lbl = {"model_name": "m", "target_model_name": "m"}
    assert h.metric(text, "inference_objective_request_duration_seconds_count", **lbl) == 3  # once per request
    assert h.metric(text, "inference_objective_request_sizes_count", **lbl) == 3
    assert h.metric(text, "inference_objective_request_sizes_sum", **lbl) == 2 * len(plain) + len(streamed)
    ok_len = len(OK.chunks[0])  # type: ignore[arg-type]
    assert h.metric(text, "inference_objective_response_sizes_sum", **lbl) == 2 * ok_len + sum(map(len, FRAMES))
    assert h.metric(text, "inference_objective_input_tokens_sum", **lbl) == 7 + 7 + 3
    assert h.metric(text, "inference_objective_output_tokens_sum", **lbl) == 3 + 3 + 2
    assert h.metric(text, "inference_objective_prompt_cached_tokens_count", **lbl) == 2  # the stream sent none
    assert h.metric(text, "inference_objective_normalized_time_per_output_token_seconds_count", **lbl) == 3
    assert h.metric(text, "inference_extension_scheduler_attempts_total", status="success") == 3
    assert h.metric(text, "inference_extension_plugin_duration_seconds_count", extension_point="Picker") == 3


async def test_every_scheduler_the_gateway_builds_reports_plugin_durations() -> None:
    async with obs_gateway() as h:
        h.gw.scheduler = build_scheduler(h.gw, default_epp_config())  # what a hot reload installs
        h.t.script(A, OK)
        assert (await h.post({"model": "m", "prompt": "x"})).status == 200
        text = await (await h.http.get(h.url + "/metrics")).text()
    assert h.metric(text, "inference_extension_plugin_duration_seconds_count", extension_point="Picker") == 1
    assert h.metric(text, "inference_extension_scheduler_attempts_total", status="success") == 1


async def test_plugin_durations_are_sampled_one_cycle_in_n() -> None:
    async with obs_gateway(plugin_timing_every=3) as h:
        h.t.script(A, OK)
        h.t.script(B, OK)
        for _ in range(4):  # cycles 0 and 3 are timed
            assert (await h.post({"model": "m", "prompt": "x"})).status == 200
        text = await (await h.http.get(h.url + "/metrics")).text()
    assert h.metric(text, "inference_extension_plugin_duration_seconds_count", extension_point="Picker") == 2
    assert h.metric(text, "inference_extension_scheduler_attempts_total", status="success") == 4
