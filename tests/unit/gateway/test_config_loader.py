"""LanternaConfig loading: YAML < LANTERNA_* env < CLI overrides, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lanterna.config.loader import load_config
from lanterna.errors import ConfigError


def test_precedence_yaml_env_cli(tmp_path: Path) -> None:
    p = tmp_path / "stack.yaml"
    p.write_text("gateway:\n  port: 9000\n  seed: 1\n  retries: {max_attempts: 2}\n"
                 "endpoints:\n  static:\n    - address: 127.0.0.1:8100\n      models: [m]\n")
    cfg = load_config(p, env={"LANTERNA_GATEWAY__PORT": "9001", "LANTERNA_GATEWAY__SEED": "5"},
                      overrides=["gateway.seed=7", "flowcontrol.enabled=false"])
    assert cfg.gateway.port == 9001 and cfg.gateway.seed == 7 and cfg.gateway.retries.max_attempts == 2
    assert not cfg.flowcontrol.enabled
    assert cfg.endpoints.static[0].address == "127.0.0.1:8100"


def test_defaults_without_file() -> None:
    cfg = load_config(None, env={})
    assert (cfg.gateway.host, cfg.gateway.port) == ("127.0.0.1", 8000)
    assert 0.05 <= cfg.endpoints.scrape_interval_s <= 0.1


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("gateway: [1, 2", "not valid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("gateway:\n  port: nope\n", "gateway.port"),
        ("gateway:\n  colour: blue\n", "gateway.colour"),
        ("endpoints:\n  static:\n    - address: nohostport\n", "host:port"),
    ],
    ids=["bad-yaml", "not-mapping", "bad-type", "unknown-key", "bad-address"],
)
def test_invalid_config_is_one_clear_line(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(p, env={})
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_missing_file_and_bad_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", env={})
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, env={}, overrides=["justakey"])


def test_word_booleans_stay_words_where_a_field_wants_a_word() -> None:
    """YAML 1.1 reads ``off`` as false: ``--set gateway.access_log=off`` and ``access_log: off`` both mean "off",
    while a boolean field still takes ``on``/``off``."""
    import yaml

    from lanterna.config.loader import load_config
    from lanterna.config.model import LanternaConfig

    cfg = load_config(None, overrides=["gateway.access_log=off", "gateway.tracing=on"])
    assert (cfg.gateway.access_log, cfg.gateway.tracing) == ("off", True)
    assert LanternaConfig.model_validate(yaml.safe_load("gateway: {access_log: off}")).gateway.access_log == "off"
