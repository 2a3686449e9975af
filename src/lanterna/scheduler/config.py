"""Loading an ``EndpointPickerConfig`` for this scheduler: the document's shape (``lanterna.config.epp``)
plus what only the scheduler knows: registered plugin types, their parameters, buildable profile wiring."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lanterna.config import epp as _epp
from lanterna.config.epp import EppConfig
from lanterna.errors import ConfigError
from lanterna.scheduler.framework import registry


def check_plugins(cfg: EppConfig) -> EppConfig:
    """Types must be registered and parameters valid; profile wiring must be buildable (raises ConfigError)."""
    for p in cfg.plugins:
        registry.validate_params(p.type, p.instance_name, p.parameters)
    if len(cfg.schedulingProfiles) > 1:
        kinds = {registry.canonical_type(p.type) for p in cfg.plugins}
        if not kinds & {"disagg-profile-handler", "single-profile-handler"}:
            raise ConfigError(
                f"{len(cfg.schedulingProfiles)} scheduling profiles need a profile handler plugin "
                "(e.g. disagg-profile-handler); only a single profile defaults to single-profile-handler"
            )
    return cfg


def parse_epp_config(data: Mapping[str, Any]) -> EppConfig:
    """Validate an already-parsed mapping, plugins included."""
    return check_plugins(_epp.parse_epp_config(data))


def load_epp_config(source: str | Path | Mapping[str, Any]) -> EppConfig:
    """Load from a shorthand (``default``/``lanterna``), a file path, YAML text, or a mapping; plugins checked."""
    return check_plugins(_epp.load_epp_config(source))
