"""Compatibility name: the body-parsing helpers live in ``lanterna.routing.fields`` (transport-free)."""

from lanterna.routing.fields import (
    HDR_DESTINATION,
    HDR_FAIRNESS,
    HDR_MODEL_REWRITE,
    HDR_OBJECTIVE,
    HDR_PREFILLER,
    HDR_REQUEST_ID,
    HDR_SESSION,
    RoutingFields,
    first_header,
    parse_body,
    priority_for,
    prompt_text,
    prompt_token_ids,
    rewrite_body,
)

__all__ = [
    "HDR_DESTINATION", "HDR_FAIRNESS", "HDR_MODEL_REWRITE", "HDR_OBJECTIVE", "HDR_PREFILLER", "HDR_REQUEST_ID",
    "HDR_SESSION", "RoutingFields", "first_header", "parse_body", "priority_for", "prompt_text", "prompt_token_ids",
    "rewrite_body",
]
