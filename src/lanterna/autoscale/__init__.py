"""Autoscaling (pure): saturation (WVA V1), token-capacity and model-based policies, cost-aware across variants,
with stabilisation, a stuck-queue guard and scale-to-zero. ``Autoscaler.decide(PoolSnapshot) -> Decision``; the
virtual-time cluster and the live loop (``lanterna autoscale``) feed it and actuate. See docs/design/autoscale.md.
"""

from lanterna.autoscale.autoscaler import Autoscaler, AutoscalerConfig, FixedPolicy, Policy, ScaleToZero
from lanterna.autoscale.behavior import ScalingBehavior, Stabilizer
from lanterna.autoscale.capacity import TokenCapacityPolicy, allocate
from lanterna.autoscale.model_based import (
    CurvePoint,
    LatencyTargets,
    ModelBasedPolicy,
    OperatingPoint,
    ServingLimits,
    WorkloadShape,
    max_rate_from_curve,
    max_sustainable_rate,
    operating_point,
)
from lanterna.autoscale.saturation import (
    SaturationAnalysis,
    SaturationConfig,
    SaturationPolicy,
    analyze,
    capacity_targets,
    is_saturated,
)
from lanterna.autoscale.types import (
    Decision,
    Demand,
    PoolSnapshot,
    Recommendation,
    ReplicaMetrics,
    Variant,
    VariantDecision,
    VariantState,
)

__all__ = [
    "Autoscaler",
    "AutoscalerConfig",
    "CurvePoint",
    "Decision",
    "Demand",
    "FixedPolicy",
    "LatencyTargets",
    "ModelBasedPolicy",
    "OperatingPoint",
    "Policy",
    "PoolSnapshot",
    "Recommendation",
    "ReplicaMetrics",
    "SaturationAnalysis",
    "SaturationConfig",
    "SaturationPolicy",
    "ScaleToZero",
    "ScalingBehavior",
    "ServingLimits",
    "Stabilizer",
    "TokenCapacityPolicy",
    "Variant",
    "VariantDecision",
    "VariantState",
    "WorkloadShape",
    "allocate",
    "analyze",
    "capacity_targets",
    "is_saturated",
    "max_rate_from_curve",
    "max_sustainable_rate",
    "operating_point",
]
