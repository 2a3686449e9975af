"""The shipped examples load and validate: ``examples/stack.yaml`` as a whole stack, ``examples/epp/*.yaml``
as EndpointPickerConfigs the scheduler builds, and the named ones equal the built-in policies."""

from __future__ import annotations

import random

import pytest

from lanterna.clock import MonotonicClock
from lanterna.config.epp import EppConfig
from lanterna.config.loader import load_config
from lanterna.scheduler import (
    Scheduler,
    SchedulerServices,
    default_epp_config,
    lanterna_recommended_config,
    load_epp_config,
)
from tests.conftest import REPO

EXAMPLES = REPO / "examples"
EPP_FILES = sorted((EXAMPLES / "epp").glob("*.yaml"))


def test_stack_example_loads_with_every_section() -> None:
    cfg = load_config(EXAMPLES / "stack.yaml", env={})
    assert [s.address for s in cfg.endpoints.static] == ["127.0.0.1:8100", "127.0.0.1:8101"]
    assert cfg.endpoints.static[0].kv_events == "tcp://127.0.0.1:5557"
    assert cfg.gateway.objectives == {"interactive": 10, "batch": -1}
    assert cfg.scheduler == "lanterna" and load_epp_config(cfg.scheduler) == lanterna_recommended_config()
    # apart from what the file says it sets on purpose, the example states the real defaults
    from lanterna.config.model import LanternaConfig

    defaults = LanternaConfig().model_dump()
    shown = cfg.model_dump()
    for section in ("kvindex", "flowcontrol"):
        assert shown[section] == defaults[section], section
    for key in ("timeouts", "retries", "circuit_breaker", "port", "host", "max_body_bytes", "scheduler_reload_s"):
        assert shown["gateway"][key] == defaults["gateway"][key], key


def test_every_epp_example_builds_a_scheduler() -> None:
    assert {p.stem for p in EPP_FILES} >= {"lanterna", "llm-d-default", "precise-prefix", "pd"}
    for path in EPP_FILES:
        epp = load_epp_config(path)
        sched = Scheduler.from_config(epp, rng=random.Random(0), clock=MonotonicClock(), services=SchedulerServices())
        assert sched is not None, path


@pytest.mark.parametrize(("stem", "builtin"), [("lanterna", lanterna_recommended_config),
                                               ("llm-d-default", default_epp_config)])
def test_named_examples_equal_the_builtin_policies(stem: str, builtin: type[EppConfig]) -> None:
    assert load_epp_config(EXAMPLES / "epp" / f"{stem}.yaml") == builtin()


def test_precise_and_pd_examples_wire_what_they_say() -> None:
    precise = load_epp_config(EXAMPLES / "epp" / "precise-prefix.yaml")
    weights = {r.pluginRef: r.effective_weight for r in precise.schedulingProfiles[0].plugins}
    assert weights["precise-prefix-cache-scorer"] == 3
    pd = load_epp_config(EXAMPLES / "epp" / "pd.yaml")
    assert {p.name for p in pd.schedulingProfiles} == {"prefill", "decode"}
    assert any(p.type == "disagg-profile-handler" for p in pd.plugins)
