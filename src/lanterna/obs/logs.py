"""Structured logging: JSON lines stamped with the request id of the task that logged them.

The gateway middleware sets ``REQUEST_ID`` (a ContextVar, so each asyncio task sees its own); a
logging filter copies it onto every record. Messages are stable snake_case event names; fields go in
``extra=``.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar

from lanterna.obs.access import AccessLogMode, setup_access_log

REQUEST_ID: ContextVar[str | None] = ContextVar("lanterna_request_id", default=None)

# Attributes every LogRecord has; anything else came from ``extra=`` and is emitted as a field.
_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "request_id"}


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            out["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(fmt: str = "json", level: str = "INFO", access_log: AccessLogMode | None = None) -> None:
    """Route the root logger to stderr as JSON lines (or plain text for people); with ``access_log``,
    the per-request access log goes to stdout in that format (``lanterna.obs.access``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s [%(request_id)s]"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if access_log is not None:
        setup_access_log(access_log)
