"""Flow control (pure): priority bands, round-robin fairness across tenants, queue TTL, capacity and shedding.

The gateway awaits it through ``lanterna.gateway.flow``; the virtual-time cluster drives ``FlowCore`` directly.
"""

from lanterna.flowcontrol.band import PriorityBand
from lanterna.flowcontrol.core import FlowCore
from lanterna.flowcontrol.stats import FlowStats
from lanterna.flowcontrol.types import (
    DEFAULT_FAIRNESS_ID,
    DropReason,
    EntryState,
    FlowConfig,
    FlowEntry,
    FlowRequest,
)

__all__ = [
    "DEFAULT_FAIRNESS_ID",
    "DropReason",
    "EntryState",
    "FlowConfig",
    "FlowCore",
    "FlowEntry",
    "FlowRequest",
    "FlowStats",
    "PriorityBand",
]
