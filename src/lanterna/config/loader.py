"""Load ``LanternaConfig``: YAML file < ``LANTERNA_*`` environment < dotted CLI overrides.

Environment keys nest with a double underscore (``LANTERNA_GATEWAY__PORT=8001``); CLI overrides are
``section.key=value`` (``gateway.port=8001``). Values are read as YAML scalars so ``true``/``3``/``0.5``
get their types. Every failure is a ``ConfigError`` with one line a person can act on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lanterna.config.model import LanternaConfig
from lanterna.config.yamltext import parse_yaml, read_text
from lanterna.errors import ConfigError

ENV_PREFIX = "LANTERNA_"

# The scheduler the ``lanterna`` apps (``up``, ``gateway``, ``config show``) run when no config names one: the
# best measured policy (README "Results", docs/design/scheduler.md). The library default stays
# ``LanternaConfig.scheduler = None`` (llm-d's default weights), so code that builds a gateway from a bare
# ``LanternaConfig`` keeps llm-d's semantics unless it asks.
DEFAULT_SCHEDULER = "lanterna"


_YAML11_BOOLS = frozenset(("y", "n", "yes", "no", "on", "off"))


def _scalar(text: str) -> Any:
    """An override's value as YAML would read it, except YAML 1.1's word booleans, kept as text: ``off`` is a
    value of ``gateway.access_log``; a boolean field still takes them (pydantic reads ``on``/``off`` as bools)."""
    if text.strip().lower() in _YAML11_BOOLS:
        return text.strip()
    try:
        return yaml.safe_load(text) if text != "" else ""
    except (yaml.YAMLError, RecursionError):
        return text


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _env_overrides(env: Mapping[str, str]) -> list[tuple[list[str], Any]]:
    out = []
    for key, raw in env.items():
        if key.startswith(ENV_PREFIX) and "__" in key:
            path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
            if path:
                out.append((path, _scalar(raw)))
    return out


def _cli_overrides(items: Iterable[str]) -> list[tuple[list[str], Any]]:
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        path = [p for p in key.strip().split(".") if p]
        if not sep or not path:
            raise ConfigError(f"config override {item!r} must look like section.key=value")
        out.append((path, _scalar(raw)))
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    data = parse_yaml(read_text(p, "config file"), f"config file {p}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: top level must be a mapping, got {type(data).__name__}")
    return data


def _describe(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "(root)"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    msg = " ".join(str(err["msg"]).split())  # one line, whatever the validator's wording
    return f"{source}: {loc}: {msg}{more}"


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
    default_scheduler: str | None = None,
) -> LanternaConfig:
    """Build the effective config. ``base`` (e.g. from CLI shortcuts like ``--port``) sits between the
    file and the environment; ``default_scheduler`` (a named policy or a path) fills ``scheduler`` when
    nothing above set it."""
    tree: dict[str, Any] = read_yaml(path) if path is not None else {}
    for dotted, value in (base or {}).items():
        _set_path(tree, dotted.split("."), value)
    for p, value in _env_overrides(os.environ if env is None else env):
        _set_path(tree, p, value)
    for p, value in _cli_overrides(overrides):
        _set_path(tree, p, value)
    if default_scheduler is not None and tree.get("scheduler") is None:
        tree["scheduler"] = default_scheduler
    try:
        return LanternaConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path) if path else "config")) from None
