"""The decode-side P/D proxy (``lanterna sidecar``): runs the prefill leg for placement ``sidecar``."""

from lanterna.sidecar.app import Sidecar, SidecarMetrics

__all__ = ["Sidecar", "SidecarMetrics"]
