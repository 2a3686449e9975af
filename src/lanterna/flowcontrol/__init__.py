"""Flow control (pure): priority bands, round-robin fairness across tenants, queue TTL, capacity and shedding.

The gateway awaits it through ``lanterna.routing.flow``; the virtual-time cluster (``lanterna.cluster.virtual``)
drives ``FlowCore`` directly in virtual time, judging saturation with ``pool_saturated``: the rule the gateway's
``compute_saturation`` applies.
"""

from lanterna.flowcontrol.band import PriorityBand
from lanterna.flowcontrol.core import FlowCore
from lanterna.flowcontrol.saturation import SATURATION_KV_USAGE, SATURATION_WAITING, pool_saturated
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
    "SATURATION_KV_USAGE",
    "SATURATION_WAITING",
    "pool_saturated",
]
