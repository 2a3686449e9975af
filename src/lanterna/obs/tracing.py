"""Request tracing: W3C ``traceparent``/``tracestate`` in, spans for the gateway's stages, context out.

Two modes, chosen once by ``Tracer(enabled=...)``:

- *OpenTelemetry* (``enabled`` and the ``[otel]`` extra installed): the client's context is extracted with
  ``opentelemetry.propagate`` (so whatever propagators the operator configured apply), a SERVER span
  covers the request, ``trace.span(name)`` opens children (``admission``, ``schedule``, ``upstream``), and
  ``trace.inject(headers)`` writes the *current* span's context, so vLLM's spans hang under ``upstream``.
- *Pass-through* (tracing off, or no OpenTelemetry): no spans; a valid client ``traceparent`` (and its
  ``tracestate``) is forwarded unchanged, an invalid one is dropped (W3C: a receiver must not propagate
  a header it cannot parse). We do not mint trace ids here: with nothing recording spans, a new id would
  only break the client's own trace into pieces.

Cost when off: ``start_request`` is two header reads and a regex match, ``span`` returns a shared no-op
context manager, ``inject`` at most two dict stores.

Calling protocol (one ``RequestTrace`` per request, owned by the request's task)::

    trace = tracer.start_request(request.headers, "POST /v1/chat/completions")
    with trace.span("admission"): ...
    with trace.span("schedule") as s: ...; s.set("lanterna.endpoint", ep)
    with trace.span("upstream") as s: trace.inject(upstream_headers); ...; s.set("http.response.status_code", 200)
    trace.end(status=200, attrs={...})       # in ``finally``: every exit path ends the server span
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, Protocol

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# version 00 exactly; a future version may carry more fields after the flags (W3C trace-context 2).
_TP = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16

AttrValue = str | bool | int | float


def valid_traceparent(value: str | None) -> bool:
    """W3C trace-context: right shape, lowercase hex, version not ff, ids not all zero."""
    if not value:
        return False
    m = _TP.match(value)
    if m is None:
        return False
    ver, tid, sid, _flags, rest = m.groups()
    if ver == "ff" or tid == _ZERO_TRACE or sid == _ZERO_SPAN:
        return False
    return not (ver == "00" and rest)


class SpanHandle(Protocol):
    def set(self, key: str, value: AttrValue) -> None: ...


class _NullSpan:
    __slots__ = ()

    def set(self, key: str, value: AttrValue) -> None:
        return None

    def __enter__(self) -> _NullSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


_NULL_SPAN = _NullSpan()


class RequestTrace:
    """Pass-through trace: forwards the client's valid context, records nothing."""

    __slots__ = ("traceparent", "tracestate")
    recording = False  # True when spans are recorded: lets callers skip building span attributes

    def __init__(self, traceparent: str | None, tracestate: str | None) -> None:
        self.traceparent = traceparent
        self.tracestate = tracestate

    @property
    def trace_id(self) -> str | None:
        """The 32-hex trace id (for logs), or None when the request carries no trace."""
        return self.traceparent[3:35] if self.traceparent else None

    def span(self, name: str, attrs: Mapping[str, AttrValue] | None = None) -> Any:
        """A context manager yielding a ``SpanHandle``; a shared no-op here."""
        return _NULL_SPAN

    def set(self, key: str, value: AttrValue) -> None:
        """An attribute on the request (server) span."""
        return None

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Write the context to propagate into an upstream request's headers."""
        if self.traceparent:
            headers[TRACEPARENT] = self.traceparent
            if self.tracestate:
                headers[TRACESTATE] = self.tracestate

    def end(self, status: int | None = None, error: str | None = None,
            attrs: Mapping[str, AttrValue] | None = None) -> None:
        """End the request span (idempotent). Call from ``finally``."""
        return None


class _OtelSpan:
    __slots__ = ("_span",)

    def __init__(self, span: Any) -> None:
        self._span = span

    def set(self, key: str, value: AttrValue) -> None:
        self._span.set_attribute(key, value)


class OtelRequestTrace(RequestTrace):
    """OpenTelemetry trace: a SERVER span for the request, INTERNAL/CLIENT children per stage."""

    __slots__ = ("_otel", "_tracer", "_root", "_ctx", "_ended")
    recording = True

    def __init__(self, otel: _Otel, tracer: Any, carrier: Mapping[str, str], name: str) -> None:
        tp = carrier.get(TRACEPARENT)
        super().__init__(tp if valid_traceparent(tp) else None, carrier.get(TRACESTATE))
        self._otel = otel
        self._tracer = tracer
        parent = otel.propagate.extract(carrier)
        self._root = tracer.start_span(name, context=parent, kind=otel.trace.SpanKind.SERVER)
        self._ctx = otel.trace.set_span_in_context(self._root, parent)
        self._ended = False

    @property
    def trace_id(self) -> str | None:
        return f"{self._root.get_span_context().trace_id:032x}"

    @contextmanager
    def span(self, name: str, attrs: Mapping[str, AttrValue] | None = None) -> Iterator[SpanHandle]:
        kind = self._otel.trace.SpanKind.CLIENT if name == "upstream" else self._otel.trace.SpanKind.INTERNAL
        outer = self._ctx
        child = self._tracer.start_span(name, context=outer, kind=kind, attributes=attrs)
        self._ctx = self._otel.trace.set_span_in_context(child, outer)
        try:
            yield _OtelSpan(child)
        except BaseException as exc:
            child.record_exception(exc)
            child.set_status(self._otel.Status(self._otel.StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            self._ctx = outer
            child.end()

    def set(self, key: str, value: AttrValue) -> None:
        self._root.set_attribute(key, value)

    def inject(self, headers: MutableMapping[str, str]) -> None:
        self._otel.propagate.inject(headers, context=self._ctx)

    def end(self, status: int | None = None, error: str | None = None,
            attrs: Mapping[str, AttrValue] | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        if attrs:
            self._root.set_attributes(dict(attrs))
        if status is not None:
            self._root.set_attribute("http.response.status_code", status)
        if error or (status is not None and status >= 500):
            self._root.set_status(self._otel.Status(self._otel.StatusCode.ERROR, error or str(status)))
        self._root.end()


class _Otel:
    """The OpenTelemetry modules, imported once (the extra is optional)."""

    def __init__(self) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.trace import Status, StatusCode

        self.propagate = propagate
        self.trace = trace
        self.Status = Status
        self.StatusCode = StatusCode


def _load_otel() -> _Otel | None:
    try:
        return _Otel()
    except ImportError:
        return None


class Tracer:
    """Makes one ``RequestTrace`` per request. ``tracer_provider`` is for tests (the SDK's in-memory
    exporter); by default the global provider the operator configured is used."""

    def __init__(self, enabled: bool = False, tracer_provider: Any = None, name: str = "lanterna.gateway") -> None:
        self._otel = _load_otel() if enabled else None
        if enabled and self._otel is None:
            log.warning("tracing_unavailable", extra={"reason": "install lanterna[otel] for OpenTelemetry spans"})
        self._tracer = (self._otel.trace.get_tracer(name, tracer_provider=tracer_provider)
                        if self._otel is not None else None)

    @property
    def recording(self) -> bool:
        """True when spans are recorded (OpenTelemetry mode)."""
        return self._tracer is not None

    def start_request(self, headers: Mapping[str, str], name: str = "request") -> RequestTrace:
        if self._otel is not None:
            return OtelRequestTrace(self._otel, self._tracer, headers, name)
        tp = headers.get(TRACEPARENT)
        if not valid_traceparent(tp):
            return _NO_TRACE
        return RequestTrace(tp, headers.get(TRACESTATE))


_NO_TRACE = RequestTrace(None, None)  # shared: a request without a valid context carries nothing
NO_TRACE = _NO_TRACE
