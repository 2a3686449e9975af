"""Single-profile handler, type ``single-profile-handler`` (the default when a config has one profile).

Runs the only profile once; its result serves the request. No parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lanterna.errors import ConfigError, NoCapacity
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import ProfileResult, SchedRequest, SchedulingResult

if TYPE_CHECKING:
    from lanterna.scheduler.framework.profile import SchedulerProfile

TYPE = "single-profile-handler"


class Params(PluginParams):
    pass


@dataclass(slots=True)
class SingleProfileHandler:
    name: str
    profile: str = ""
    type_name: str = TYPE

    def check_profiles(self, profiles: Mapping[str, SchedulerProfile]) -> None:
        if len(profiles) != 1:
            raise ConfigError(f"{TYPE} needs exactly one scheduling profile, got {len(profiles)}")
        self.profile = next(iter(profiles))

    def pick(
        self, req: SchedRequest, profiles: Mapping[str, SchedulerProfile], results: Mapping[str, ProfileResult | None]
    ) -> list[str]:
        return [] if results else [next(iter(profiles))]

    def process_results(self, req: SchedRequest, results: Mapping[str, ProfileResult | None]) -> SchedulingResult:
        name, res = next(iter(results.items()))
        if res is None or not res.targets:
            raise NoCapacity(f"no endpoint passed the filters for model {req.model!r}")
        return SchedulingResult(profile_results={name: res}, primary_profile=name)


@register(TYPE, params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> SingleProfileHandler:
    parse_params(Params, TYPE, name, params)
    return SingleProfileHandler(name=name)
