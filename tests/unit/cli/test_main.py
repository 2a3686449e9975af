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
