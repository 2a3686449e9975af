"""Compatibility name: load accounting lives in ``lanterna.routing.accounting`` (pure)."""

from lanterna.routing.accounting import LoadTicket

__all__ = ["LoadTicket"]
