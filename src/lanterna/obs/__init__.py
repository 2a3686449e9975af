"""Observability: JSON logging with request ids (logs.py) and the gateway's Prometheus registry (metrics.py)."""

from lanterna.obs.logs import REQUEST_ID, setup_logging

__all__ = ["REQUEST_ID", "setup_logging"]
