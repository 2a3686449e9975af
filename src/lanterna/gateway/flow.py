"""Compatibility name: the async flow-control face lives in ``lanterna.routing.flow`` (no aiohttp)."""

from lanterna.routing.flow import (
    DROPPED_REASON_HEADER,
    FlowConfig,
    FlowController,
    FlowRequest,
    FlowStats,
    Ticket,
)

__all__ = ["DROPPED_REASON_HEADER", "FlowConfig", "FlowController", "FlowRequest", "FlowStats", "Ticket"]
