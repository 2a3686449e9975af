"""Observability: JSON logging with request ids (logs.py), the per-request access log (access.py), request
tracing (tracing.py) and the gateway's Prometheus registry (metrics.py)."""

from lanterna.obs.access import ACCESS_LOGGER, AccessLog, AccessRecord, setup_access_log
from lanterna.obs.logs import REQUEST_ID, setup_logging
from lanterna.obs.tracing import RequestTrace, Tracer

__all__ = ["ACCESS_LOGGER", "REQUEST_ID", "AccessLog", "AccessRecord", "RequestTrace", "Tracer", "setup_access_log",
           "setup_logging"]
