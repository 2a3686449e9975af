"""The access log: one line per request, JSON or text, on the dedicated logger ``lanterna.access``.

Why not a ``logging.Formatter`` over ``extra=`` fields: the stdlib path builds a LogRecord, copies every
extra into its ``__dict__`` and walks it again to format, roughly 10x the cost of serialising one typed
record. Here the line is rendered once by ``msgspec`` (the project's one JSON library) straight from
the ``AccessRecord`` dataclass and handed to the logger's handlers as the message, so routing the stream
elsewhere (a file, a collector, ``logging.config``) stays the usual stdlib way, and a disabled logger
costs one ``isEnabledFor`` check.

Fields (JSON keys, in order): ts, request_id, method, path, model, adapter, endpoint, prefill_endpoint,
profile, status, prompt_tokens, cached_tokens, output_tokens, ttft_ms, duration_ms, retries, stream,
fairness_id, priority, client, error. Unknown values are ``null`` (JSON) or ``-`` (text).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Literal

import msgspec

ACCESS_LOGGER = "lanterna.access"
AccessLogMode = Literal["json", "text", "off"]
_encode = msgspec.json.encode


@dataclass(slots=True)
class AccessRecord:
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
    """One JSON object; msgspec serialises slotted dataclasses natively, in field order."""
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
        # NOTE: the rendered line is the message and there are no args, so handlers with the default
        # "%(message)s" formatter print it verbatim; a user's formatter may still add a prefix.
        # makeRecord + handle skips Logger.info's findCaller stack walk (about half the cost).
        lg = self._logger
        lg.handle(lg.makeRecord(lg.name, logging.INFO, "access", 0, self._fmt(rec), (), None))


def setup_access_log(mode: AccessLogMode, stream: object | None = None) -> AccessLog:
    """Give ``lanterna.access`` its own stdout handler (message only) and stop it reaching the root
    logger, whose JSON formatter would wrap the line a second time. Idempotent: re-running replaces the
    handler this function added, and leaves any handler a user configured alone."""
    logger = logging.getLogger(ACCESS_LOGGER)
    for h in list(logger.handlers):
        if getattr(h, "_lanterna_access", False):
            logger.removeHandler(h)
    if mode != "off":
        handler = logging.StreamHandler(stream or sys.stdout)  # type: ignore[arg-type]
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._lanterna_access = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    else:
        logger.propagate = True
    return AccessLog(mode, logger)
