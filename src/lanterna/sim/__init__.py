"""sim: a vLLM-compatible simulator. The engine and timing model are pure; server/publisher drive them."""

from lanterna.sim.engine import Engine, EngineConfig, EngineStats, EngineStepOutput
from lanterna.sim.profiles import PROFILES, ModelProfile, get_profile
from lanterna.sim.timing import (
    BatchShape,
    ConstantTimer,
    PerTokenTimer,
    PhysicsTimer,
    StepTimer,
    make_timer,
)
from lanterna.sim.types import EngineRequest, RemotePrefill, RequestTokens, StepOutput

__all__ = [
    "PROFILES",
    "BatchShape",
    "ConstantTimer",
    "Engine",
    "EngineConfig",
    "EngineRequest",
    "EngineStats",
    "EngineStepOutput",
    "ModelProfile",
    "PerTokenTimer",
    "PhysicsTimer",
    "RemotePrefill",
    "RequestTokens",
    "StepOutput",
    "StepTimer",
    "get_profile",
    "make_timer",
]
