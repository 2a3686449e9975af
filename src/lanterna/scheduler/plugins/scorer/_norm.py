"""Shared scoring arithmetic for scorers."""

from __future__ import annotations


def inverse_minmax(values: dict[str, float]) -> dict[str, float]:
    """(max - v) / (max - min): the lowest value scores 1, the highest 0; all equal -> all 1.0."""
    if not values:
        return {}
    lo, hi = min(values.values()), max(values.values())
    if hi == lo:
        return dict.fromkeys(values, 1.0)
    span = hi - lo
    return {k: (hi - v) / span for k, v in values.items()}
