"""Properties of the config loaders (hypothesis; files in a temp dir, no processes).

Whatever a person writes (YAML text, a tree of the right keys with wrong values, ``--set`` overrides,
``LANTERNA_*`` variables, an EndpointPickerConfig), ``load_config`` / ``load_epp_config`` return a valid
config or raise ``ConfigError`` whose message is one line (apps print it and exit 2); never another exception.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lanterna.config.epp import EppConfig, load_epp_config
from lanterna.config.loader import load_config
from lanterna.config.model import LanternaConfig
from lanterna.errors import ConfigError

SETTINGS = settings(max_examples=int(os.environ.get("LANTERNA_PROPERTY_EXAMPLES", "60")), deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_KEYS = ["gateway", "endpoints", "scheduler", "static", "address", "port", "host", "timeouts", "first_byte_s",
         "retries", "max_attempts", "circuit_breaker", "failure_threshold", "objectives", "model_rewrites",
         "traffic_split", "model", "weight", "plugins", "schedulingProfiles", "type", "name", "parameters",
         "pluginRef", "apiVersion", "kind", "max_body_bytes", "log_format", "labels", "models", "kv_events"]
_scalar = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
           | st.sampled_from(["127.0.0.1:8000", "x:y", "json", "queue-scorer", "max-score-picker", "-1", "1e9"]))
trees = st.recursive(_scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    st.sampled_from(_KEYS) | st.text(max_size=6), c, max_size=5), max_leaves=30)


def _one_line(err: ConfigError) -> None:
    msg = str(err)
    assert msg and "\n" not in msg and "Traceback" not in msg, repr(msg)


def _load(**kw: Any) -> None:
    try:
        cfg = load_config(env={}, **kw)
    except ConfigError as err:
        _one_line(err)
    else:
        assert isinstance(cfg, LanternaConfig)


def _write(data: bytes) -> Path:
    f = tempfile.NamedTemporaryFile("wb", suffix=".yaml", delete=False)
    with f:
        f.write(data)
    return Path(f.name)


@SETTINGS
@given(st.text(max_size=300))
def test_any_yaml_text(text: str) -> None:
    p = _write(text.encode("utf-8", "surrogatepass"))
    try:
        _load(path=p)
    finally:
        p.unlink()


@SETTINGS
@given(st.dictionaries(st.sampled_from(["gateway", "endpoints", "scheduler", "cluster"]), trees, max_size=3))
def test_any_tree_of_known_keys(tree: dict[str, Any]) -> None:
    p = _write(yaml.safe_dump(tree).encode())
    try:
        _load(path=p)
    finally:
        p.unlink()


_dotted = st.lists(st.sampled_from(_KEYS) | st.text(max_size=5), min_size=1, max_size=4).map(".".join)


@SETTINGS
@given(st.lists(st.tuples(_dotted, st.text(max_size=12)).map("=".join) | st.text(max_size=20), max_size=4))
def test_any_cli_overrides(items: list[str]) -> None:
    _load(overrides=items)


@SETTINGS
@given(st.dictionaries(st.lists(st.sampled_from([k.upper() for k in _KEYS]) | st.text(max_size=4), min_size=1,
                                max_size=3).map(lambda p: "LANTERNA_" + "__".join(p)), st.text(max_size=12),
                       max_size=4))
def test_any_environment(env: dict[str, str]) -> None:
    try:
        cfg = load_config(env=env)
    except ConfigError as err:
        _one_line(err)
    else:
        assert isinstance(cfg, LanternaConfig)


def _epp(source: Any) -> None:
    try:
        cfg = load_epp_config(source)
    except ConfigError as err:
        _one_line(err)
    else:
        assert isinstance(cfg, EppConfig)


@SETTINGS
@given(st.fixed_dictionaries({}, optional={
    "apiVersion": _scalar, "kind": _scalar,
    "plugins": st.lists(st.fixed_dictionaries({"type": st.sampled_from(
        ["queue-scorer", "prefix-cache-scorer", "max-score-picker", "no-such-plugin", "load-aware-scorer"])},
        optional={"name": _scalar, "parameters": trees}) | trees, max_size=4) | trees,
    "schedulingProfiles": st.lists(st.fixed_dictionaries({"name": _scalar}, optional={
        "plugins": st.lists(st.fixed_dictionaries({"pluginRef": _scalar}, optional={"weight": _scalar}) | trees,
                            max_size=3)}), max_size=3) | trees,
}))
def test_any_epp_mapping(data: dict[str, Any]) -> None:
    _epp(data)
    _epp(yaml.safe_dump(data) + "\n")  # the same as YAML text


@SETTINGS
@given(st.text(max_size=200).map(lambda t: t + "\n"))
def test_any_epp_text(text: str) -> None:
    _epp(text)


@pytest.mark.parametrize("data", [b"\xff\xfe\x00bad", b"gateway:\n  port: \xed\xa0\x80\n", b"\x08gateway: {}\n"])
def test_file_that_is_not_utf8(data: bytes) -> None:
    p = _write(data)
    try:
        _load(path=p)
    finally:
        p.unlink()


def test_deeply_nested_yaml() -> None:
    p = _write(b"gateway: " + b"[" * 5000 + b"]" * 5000 + b"\n")
    try:
        _load(path=p)
    finally:
        p.unlink()


@pytest.mark.parametrize("item", [".=1", "..=x"])
def test_override_with_empty_path(item: str) -> None:
    _load(overrides=[item])
