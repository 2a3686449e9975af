"""The llm-d-compatible scheduler: profile handler -> filters -> weighted scorers -> picker.

Public API (used by the gateway, the ext_proc picker and the virtual-time cluster)::

    cfg = load_epp_config(path_or_yaml_text)        # or default_epp_config() / lanterna_recommended_config()
    sched = Scheduler.from_config(cfg, rng=random.Random(seed), clock=clock, services=SchedulerServices())
    result = sched.schedule(req, candidates)        # NoCapacity when nothing fits
    sched.pre_request(req, result); ...; sched.response_complete(req, result, endpoint_id, cached_tokens)
"""

from lanterna.config.epp import EppConfig, default_epp_config, lanterna_recommended_config
from lanterna.scheduler.config import check_plugins, load_epp_config, parse_epp_config
from lanterna.scheduler.framework.interfaces import KVIndexView, SchedulerServices
from lanterna.scheduler.framework.registry import known_types, register
from lanterna.scheduler.framework.scheduler import Scheduler
from lanterna.scheduler.framework.types import (
    PrefixMatch,
    ProfileResult,
    SchedRequest,
    SchedulingResult,
)

__all__ = [
    "EppConfig",
    "KVIndexView",
    "PrefixMatch",
    "ProfileResult",
    "SchedRequest",
    "Scheduler",
    "SchedulerServices",
    "SchedulingResult",
    "check_plugins",
    "default_epp_config",
    "known_types",
    "lanterna_recommended_config",
    "load_epp_config",
    "parse_epp_config",
    "register",
]
