"""The access log: one line per request, JSON or text, on the dedicated logger ``lanterna.access``.

Why not a ``logging.Formatter`` over ``extra=`` fields: the stdlib path builds a LogRecord, copies every
extra into its ``__dict__`` and walks it again to format, roughly 10x the cost of serialising one typed
record. Here the line is rendered once by ``msgspec`` (the project's one JSON library) straight from
the ``AccessRecord`` struct (a ``msgspec.Struct``: built and encoded in C, about half a slotted dataclass's
cost per request) and handed to the logger's handlers as the message, so routing the stream
elsewhere (a file, a collector, ``logging.config``) stays the usual stdlib way, and a disabled logger
costs one ``isEnabledFor`` check.

The default destination (``setup_access_log``, which ``lanterna gateway`` / ``lanterna up`` call) is stdout
through a ``LineSink``: while that sink's handler is the logger's only handler (and the logger has no
filters), ``AccessLog.write`` skips the LogRecord altogether and appends the line to the sink, which writes
all lines of one event-loop iteration with one ``write`` + ``flush`` per 4 KB (instead of one per request).
Add a handler or filter to ``lanterna.access`` (``logging.config``, ``logger.addHandler``) and every line goes
through the logger again, to every handler, in order.

Fields (JSON keys, in order): ts, request_id, method, path, model, adapter, endpoint, prefill_endpoint,
profile, status, prompt_tokens, cached_tokens, output_tokens, ttft_ms, duration_ms, retries, stream,
fairness_id, priority, client, error. Unknown values are ``null`` (JSON) or ``-`` (text).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import weakref
from typing import Literal, TextIO

import msgspec

ACCESS_LOGGER = "lanterna.access"
AccessLogMode = Literal["json", "text", "off"]
_encode = msgspec.json.encode


class AccessRecord(msgspec.Struct):
    """Everything one access-log line says about one request. The routing core fills it (or maps its
    ``InferenceCall`` onto it) on completion; times are already in ms because that is what people read."""

    ts: float  # wall-clock epoch seconds when the request arrived
    request_id: str
    method: str
    path: str
    status: int
    duration_ms: float
    model: str | None = None  # as the client asked (after the objective's rewrite: target model)
    adapter: str | None = None  # LoRA adapter served, when the model is one
    endpoint: str | None = None  # host:port that served it (the decode endpoint under P/D)
    prefill_endpoint: str | None = None  # host:port of the prefill endpoint under P/D
    profile: str | None = None  # scheduling profile(s) that picked, e.g. "decode" or "prefill+decode"
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    output_tokens: int | None = None
    ttft_ms: float | None = None
    retries: int = 0
    stream: bool = False
    fairness_id: str | None = None
    priority: int | None = None
    client: str | None = None  # remote address
    error: str | None = None  # error type / dropped reason when status >= 400 or the stream broke


def format_json(rec: AccessRecord) -> str:
    """One JSON object, fields in declaration order."""
    return _encode(rec).decode()


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _s(v: object) -> str:
    return "-" if v is None or v == "" else str(v)


def format_text(rec: AccessRecord) -> str:
    """Space-separated for people: the common-log-like head, then ``key=value`` for the inference fields."""
    return (
        f'{_s(rec.client)} "{rec.method} {rec.path}" {rec.status} {_ms(rec.duration_ms)}ms '
        f"rid={rec.request_id} model={_s(rec.model)} adapter={_s(rec.adapter)} endpoint={_s(rec.endpoint)} "
        f"prefill={_s(rec.prefill_endpoint)} profile={_s(rec.profile)} prompt={_s(rec.prompt_tokens)} "
        f"cached={_s(rec.cached_tokens)} output={_s(rec.output_tokens)} ttft={_ms(rec.ttft_ms)}ms "
        f"retries={rec.retries} stream={'1' if rec.stream else '0'} fairness={_s(rec.fairness_id)} "
        f"priority={_s(rec.priority)} error={_s(rec.error)}"
    )


class LineSink:
    """Buffers lines and writes them to ``stream`` (``sys.stdout`` as it is at write time when None) ``flush_s``
    after the first waiting line (0: at the end of the event-loop iteration), or at once when ``max_lines`` are
    waiting or no loop is running. Lines still waiting at interpreter exit are written by an ``atexit`` hook.

    Why a delay: each flush is a write syscall (and, for a pipe, the reader's wake-up); flushing per loop
    iteration cost one write per request at a few hundred requests/s, ~4% of the gateway's CPU per request."""

    __slots__ = ("__weakref__", "_lines", "_pending", "_stream", "flush_s", "max_lines")

    def __init__(self, stream: TextIO | None = None, max_lines: int = 256, flush_s: float = 0.05) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._pending = False
        self.max_lines = max_lines
        self.flush_s = flush_s
        _SINKS.add(self)

    def write(self, line: str) -> None:
        lines = self._lines
        lines.append(line)
        if self._pending:
            if len(lines) >= self.max_lines:
                self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._pending = True
        if self.flush_s > 0:
            loop.call_later(self.flush_s, self.flush)
        else:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self._pending = False
        lines = self._lines
        if not lines:
            return
        self._lines = []
        stream = self._stream or sys.stdout
        # NOTE: written in chunks of whole lines under PIPE_BUF, each flushed by itself: a write that small to
        # a pipe is atomic, so the workers of ``--workers N`` sharing one stdout never interleave within a line.
        chunk: list[str] = []
        size = 0
        try:
            for line in lines:
                n = len(line) + 1
                if chunk and size + n > _ATOMIC_WRITE:
                    stream.write("\n".join(chunk) + "\n")
                    stream.flush()
                    chunk, size = [], 0
                chunk.append(line)
                size += n
            stream.write("\n".join(chunk) + "\n")
            stream.flush()
        except (OSError, ValueError):  # stdout closed or gone (a dead pipe): lose the lines, keep serving
            pass


_ATOMIC_WRITE = 4096  # POSIX PIPE_BUF minimum
_SINKS: weakref.WeakSet[LineSink] = weakref.WeakSet()


@atexit.register
def _flush_sinks() -> None:
    for sink in list(_SINKS):
        sink.flush()


class SinkHandler(logging.Handler):
    """The handler ``setup_access_log`` installs: messages go to a ``LineSink``. ``AccessLog`` bypasses the
    LogRecord while this is the logger's only handler; records logged the usual way still arrive here."""

    def __init__(self, sink: LineSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.write(record.getMessage())

    def flush(self) -> None:
        self.sink.flush()


class AccessLog:
    """Writes ``AccessRecord``s to the ``lanterna.access`` logger. ``mode="off"`` makes ``write`` a no-op."""

    __slots__ = ("mode", "_logger", "_fmt")

    def __init__(self, mode: AccessLogMode = "json", logger: logging.Logger | None = None) -> None:
        self.mode = mode
        self._logger = logger or logging.getLogger(ACCESS_LOGGER)
        self._fmt = format_json if mode == "json" else format_text

    @property
    def enabled(self) -> bool:
        """Lets the caller skip building a record at all (e.g. reading the peer address)."""
        return self.mode != "off" and self._logger.isEnabledFor(logging.INFO)

    def write(self, rec: AccessRecord) -> None:
        if self.mode == "off" or not self._logger.isEnabledFor(logging.INFO):
            return
        self.emit(rec)

    def emit(self, rec: AccessRecord) -> None:
        """``write`` for a caller that has just checked ``enabled`` (the routing core, once per request)."""
        lg = self._logger
        handlers = lg.handlers
        if len(handlers) == 1 and type(handlers[0]) is SinkHandler and not lg.filters and not lg.propagate:
            handlers[0].sink.write(self._fmt(rec))  # the default stdout path: no LogRecord (module doc)
            return
        # NOTE: the rendered line is the message and there are no args, so handlers with the default
        # "%(message)s" formatter print it verbatim; a user's formatter may still add a prefix.
        # makeRecord + handle skips Logger.info's findCaller stack walk (about half the cost).
        lg.handle(lg.makeRecord(lg.name, logging.INFO, "access", 0, self._fmt(rec), (), None))


def setup_access_log(mode: AccessLogMode, stream: TextIO | None = None) -> AccessLog:
    """Give ``lanterna.access`` its own stdout sink (message only, ``LineSink``) and stop it reaching the
    root logger, whose JSON formatter would wrap the line a second time. Idempotent: re-running replaces the
    handler this function added, and leaves any handler a user configured alone."""
    logger = logging.getLogger(ACCESS_LOGGER)
    for h in list(logger.handlers):
        if getattr(h, "_lanterna_access", False):
            h.flush()
            logger.removeHandler(h)
    if mode != "off":
        handler = SinkHandler(LineSink(stream))
        handler._lanterna_access = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    else:
        logger.propagate = True
    return AccessLog(mode, logger)
