"""Plugin registry: llm-d type name -> factory.

Registering a plugin (one module per plugin under ``lanterna/scheduler/plugins/<kind>/``)::

    class Params(PluginParams):            # pydantic, extra="forbid"; field aliases = llm-d names
        threshold: int = Field(128, ge=1)

    @register("load-aware-scorer", params=Params)
    def make(name: str, params: Mapping[str, Any], services: SchedulerServices) -> LoadAwareScorer:
        p = parse_params(Params, "load-aware-scorer", name, params)
        return LoadAwareScorer(name=name, threshold=p.threshold)

The factory receives the raw ``parameters`` mapping from the YAML ({} when absent) and the shared
``SchedulerServices``; it returns an object with ``name`` and ``type_name`` that implements one or more
plugin kinds (see ``interfaces.py``). ``params=`` lets ``load_epp_config`` validate parameters before
anything is built. Modules register on import; ``load_builtin_plugins()`` imports every module below
``lanterna.scheduler.plugins`` once, so dropping a module into a kind folder is enough.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from lanterna.errors import ConfigError
from lanterna.scheduler.framework.interfaces import Plugin, SchedulerServices

PluginFactory = Callable[[str, Mapping[str, Any], SchedulerServices], Plugin]
F = TypeVar("F", bound=Callable[..., Any])
P = TypeVar("P", bound="PluginParams")


class PluginParams(BaseModel):
    """Base for plugin parameter models: unknown keys are errors (catches typos), llm-d names via alias."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


@dataclass(frozen=True, slots=True)
class Registration:
    type_name: str
    factory: PluginFactory
    params: type[PluginParams] | None


_REGISTRY: dict[str, Registration] = {}
_ALIASES: dict[str, str] = {}
_loaded = False


def register(type_name: str, *aliases: str, params: type[PluginParams] | None = None) -> Callable[[F], F]:
    """Decorator: register ``factory`` under ``type_name`` (and aliases, e.g. ``pd-profile-handler``)."""

    def deco(factory: F) -> F:
        reg = Registration(type_name, factory, params)
        for t in (type_name, *aliases):
            _REGISTRY[t] = reg
            if t != type_name:
                _ALIASES[t] = type_name
        return factory

    return deco


def load_builtin_plugins() -> None:
    """Import every plugin module once so that its ``@register`` runs."""
    global _loaded
    if _loaded:
        return
    import lanterna.scheduler.plugins as root

    for kind in pkgutil.iter_modules(root.__path__, root.__name__ + "."):
        pkg = importlib.import_module(kind.name)
        if not hasattr(pkg, "__path__"):
            continue
        for mod in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
            importlib.import_module(mod.name)
    _loaded = True


def known_types() -> list[str]:
    load_builtin_plugins()
    return sorted(_REGISTRY)


def canonical_type(type_name: str) -> str:
    return _ALIASES.get(type_name, type_name)


def lookup(type_name: str) -> Registration:
    load_builtin_plugins()
    reg = _REGISTRY.get(type_name)
    if reg is None:
        raise ConfigError(f"unknown plugin type {type_name!r}; known types: {', '.join(known_types())}")
    return reg


def parse_params(model: type[P], type_name: str, name: str, params: Mapping[str, Any] | None) -> P:
    """Validate raw YAML parameters into ``model``; errors name the plugin and the parameter."""
    try:
        return model.model_validate(dict(params or {}))
    except ValidationError as exc:
        msgs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(parameters)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"plugin {name!r} (type {type_name}): invalid parameters: {msgs}") from None


def validate_params(type_name: str, name: str, params: Mapping[str, Any] | None) -> None:
    reg = lookup(type_name)
    if reg.params is not None:
        parse_params(reg.params, type_name, name, params)


def build(type_name: str, name: str, params: Mapping[str, Any] | None, services: SchedulerServices) -> Plugin:
    """Build one plugin instance; unknown types and bad parameters raise ``ConfigError``."""
    reg = lookup(type_name)
    plugin = reg.factory(name, dict(params or {}), services)
    return plugin
