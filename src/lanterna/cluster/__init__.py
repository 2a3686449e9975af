"""cluster: N replicas as local processes (``launcher``) or one in-process virtual-time cluster (``virtual``).

Public names are imported lazily so the process launcher does not pull in the simulator and scheduler."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VirtualCluster": "lanterna.cluster.virtual", "run_virtual": "lanterna.cluster.virtual",
    "POLICIES": "lanterna.cluster.policies", "resolve_policy": "lanterna.cluster.policies",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lanterna.cluster' has no attribute {name!r}")
