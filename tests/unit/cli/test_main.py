"""``lanterna`` entry point: ``--version``, defaults in every ``--help``, the named policies listed, and the
apps' default scheduler (``lanterna``) applied only when no config names one."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import lanterna
from lanterna.cli.gateway import POLICIES, load_from_args
from lanterna.cli.main import SUBCOMMANDS, HelpFormatter, build_parser, main
from lanterna.config.epp import SHORTHANDS


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"lanterna {lanterna.__version__}"


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())  # unwrap


@pytest.mark.parametrize("command", ["up", "gateway"])
def test_help_shows_defaults_and_named_policies(capsys: pytest.CaptureFixture[str], command: str) -> None:
    text = _help(capsys, command)
    assert "(default: 1)" in text  # --workers
    assert "(default: 8000, gateway.port)" in text and "(default: lanterna)" in text
    for name in POLICIES:
        assert f"{name}:" in text
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text


def test_every_subcommand_help_uses_the_defaults_formatter(capsys: pytest.CaptureFixture[str]) -> None:
    assert "(default: 4)" in _help(capsys, "up")  # --replicas
    for command in SUBCOMMANDS:
        _help(capsys, command)  # renders

    def walk(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return [parser, *(q for s in subs for child in s.choices.values() for q in walk(child))]

    parsers = walk(build_parser())
    assert len(parsers) > len(SUBCOMMANDS) + 4  # nested ones too (bench run/sweep/..., config show, models ...)
    for parser in parsers:
        assert issubclass(parser.formatter_class, HelpFormatter), parser.prog


def test_policy_names_in_help_match_the_loader() -> None:
    assert set(POLICIES) == set(SHORTHANDS)


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["gateway", *argv])


def test_apps_default_to_the_lanterna_policy_unless_configured(tmp_path: Path) -> None:
    assert load_from_args(_args()).scheduler == "lanterna"
    assert load_from_args(_args("--scheduler-config", "llm-d")).scheduler == "llm-d"
    cfg = tmp_path / "stack.yaml"
    cfg.write_text("scheduler: default\n")
    assert load_from_args(_args("--config", str(cfg))).scheduler == "default"
    assert load_from_args(_args("--set", "scheduler=llm-d")).scheduler == "llm-d"


def test_library_default_is_unchanged() -> None:
    """Embedders building a gateway from a bare LanternaConfig keep llm-d's default weights."""
    from lanterna.config.loader import load_config

    assert load_config(None, env={}).scheduler is None


def test_kv_events_flag_sets_a_static_endpoints_publisher() -> None:
    from lanterna.errors import ConfigError

    cfg = load_from_args(_args("--endpoint", "127.0.0.1:8001", "--endpoint", "127.0.0.1:8002",
                               "--kv-events", "127.0.0.1:8002=tcp://127.0.0.1:5558"))
    assert [(e.address, e.kv_events) for e in cfg.endpoints.static] == [
        ("127.0.0.1:8001", None), ("127.0.0.1:8002", "tcp://127.0.0.1:5558")]
    for bad, msg in (("127.0.0.1:9=tcp://x:1", "no --endpoint"), ("127.0.0.1:8001", "expected HOST:PORT=")):
        with pytest.raises(ConfigError, match=msg):
            load_from_args(_args("--endpoint", "127.0.0.1:8001", "--kv-events", bad))


def test_discovery_flags_make_a_spec() -> None:
    from lanterna.k8s.discovery_args import spec_from_args

    assert spec_from_args(_args("--endpoint", "h:1")) is None
    spec = spec_from_args(_args("--pool", "llama", "--namespace", "ml", "--pod-kv-events-port", "5557"), ["m"])
    assert spec is not None and (spec.pool, spec.namespace, spec.kv_events_port, spec.models) == (
        "llama", "ml", 5557, ("m",))
    spec = spec_from_args(_args("--selector", "app=vllm", "--target-port", "8000", "--target-port", "8001",
                                "--namespace", "ml"))
    assert spec is not None and spec.target_ports == (8000, 8001)
    with pytest.raises(ValueError, match="for --selector"):
        spec_from_args(_args("--pool", "p", "--target-port", "1", "--namespace", "ml"))
