"""Endpoints: the scheduler's view of model servers (pure); ``scrape`` polls them (adapter)."""

from lanterna.endpoints.store import EndpointStore, ModelCard
from lanterna.endpoints.types import (
    ROLE_BOTH,
    ROLE_DECODE,
    ROLE_LABEL,
    ROLE_PREFILL,
    Endpoint,
    EndpointId,
    EndpointLoad,
    EndpointMetrics,
)

__all__ = [
    "ROLE_BOTH",
    "ROLE_DECODE",
    "ROLE_LABEL",
    "ROLE_PREFILL",
    "Endpoint",
    "EndpointId",
    "EndpointLoad",
    "EndpointMetrics",
    "EndpointStore",
    "ModelCard",
]
