"""P/D profile handler, type ``disagg-profile-handler`` (alias ``pd-profile-handler``).

Runs the decode profile first; then asks the decider whether the picked decode endpoint should get its
KV from a prefill endpoint, and if so runs the prefill profile. The decode profile's pick serves the
request; the prefill pick (``SchedulingResult.prefill()``) goes in ``x-prefiller-host-port``. If the
prefill profile finds no endpoint the request is served decode-only rather than failed.

Params: ``decodeProfile`` ("decode"), ``prefillProfile`` ("prefill"), ``deciderPluginName`` (a
``prefix-based-pd-decider`` instance; default: the config's only decider, else one built from
``threshold``), ``threshold`` (legacy ``pd-profile-handler``: nonCachedTokens for the built-in decider);
``hashBlockSize``, ``prefixPluginName``, ``primaryPort`` are accepted for llm-d compatibility and unused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from lanterna.errors import ConfigError, NoCapacity
from lanterna.scheduler.framework.interfaces import Plugin, SchedulerServices
from lanterna.scheduler.framework.registry import PluginParams, parse_params, register
from lanterna.scheduler.framework.types import ProfileResult, SchedRequest, SchedulingResult
from lanterna.scheduler.plugins.profile.pd_decider import PrefixBasedPDDecider

if TYPE_CHECKING:
    from lanterna.scheduler.framework.profile import SchedulerProfile

TYPE = "disagg-profile-handler"


class Params(PluginParams):
    decodeProfile: str = "decode"
    prefillProfile: str = "prefill"
    deciderPluginName: str | None = None
    threshold: int = Field(0, ge=0)
    hashBlockSize: int | None = None
    prefixPluginName: str | None = None
    primaryPort: int | None = None


@dataclass(slots=True)
class DisaggProfileHandler:
    name: str
    decode_profile: str
    prefill_profile: str
    decider_name: str | None
    decider: PrefixBasedPDDecider
    type_name: str = TYPE

    def bind(self, plugins: Mapping[str, Plugin]) -> None:
        deciders = {n: p for n, p in plugins.items() if isinstance(p, PrefixBasedPDDecider)}
        if self.decider_name is not None:
            if self.decider_name not in deciders:
                raise ConfigError(f"{self.name}: deciderPluginName {self.decider_name!r} is not a decider plugin")
            self.decider = deciders[self.decider_name]
        elif len(deciders) == 1:
            self.decider = next(iter(deciders.values()))

    def check_profiles(self, profiles: Mapping[str, SchedulerProfile]) -> None:
        if self.decode_profile not in profiles:
            raise ConfigError(f"{self.name}: no scheduling profile named {self.decode_profile!r} (decodeProfile)")

    def pick(
        self, req: SchedRequest, profiles: Mapping[str, SchedulerProfile], results: Mapping[str, ProfileResult | None]
    ) -> list[str]:
        if self.decode_profile not in results:
            return [self.decode_profile]
        decode = results[self.decode_profile]
        if (
            decode is None
            or self.prefill_profile in results
            or self.prefill_profile not in profiles
            or decode.primary is None
        ):
            return []
        return [self.prefill_profile] if self.decider.disaggregate(req, decode.primary) else []

    def process_results(self, req: SchedRequest, results: Mapping[str, ProfileResult | None]) -> SchedulingResult:
        decode = results.get(self.decode_profile)
        if decode is None or not decode.targets:
            raise NoCapacity(f"no decode endpoint passed the filters for model {req.model!r}")
        out = {self.decode_profile: decode}
        prefill = results.get(self.prefill_profile)
        if prefill is not None and prefill.targets:
            out["prefill"] = prefill  # SchedulingResult.prefill() looks it up under this name
        return SchedulingResult(profile_results=out, primary_profile=self.decode_profile)


@register(TYPE, "pd-profile-handler", params=Params)
def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> DisaggProfileHandler:
    p = parse_params(Params, TYPE, name, params)
    return DisaggProfileHandler(
        name=name,
        decode_profile=p.decodeProfile,
        prefill_profile=p.prefillProfile,
        decider_name=p.deciderPluginName,
        decider=PrefixBasedPDDecider(name=f"{name}/decider", non_cached_tokens=p.threshold),
    )
