"""Compatibility name: breakers and attempt ordering live in ``lanterna.routing.retries`` (pure)."""

from lanterna.routing.retries import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Breakers,
    CircuitBreaker,
    attempt_order,
    retryable_status,
)

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "Breakers", "CircuitBreaker", "attempt_order", "retryable_status"]
