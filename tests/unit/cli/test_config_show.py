"""``lanterna config show``: the effective tree as YAML, round-trippable, with the gateway's precedence."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lanterna.cli.main import main
from lanterna.config.loader import DEFAULT_SCHEDULER
from lanterna.config.model import LanternaConfig
from lanterna.scheduler import default_epp_config, lanterna_recommended_config, parse_epp_config


def _show(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["config", "show", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_show_prints_effective_tree_with_defaults_and_overrides(capsys, tmp_path: Path, monkeypatch) -> None:
    cfg = tmp_path / "stack.yaml"
    cfg.write_text("gateway:\n  port: 7000\n  retries:\n    max_attempts: 2\n")
    monkeypatch.setenv("LANTERNA_GATEWAY__SEED", "9")
    rc, out, _ = _show(capsys, "--config", str(cfg), "--set", "gateway.retries.max_attempts=4",
                       "--endpoint", "10.0.0.1:8000")
    assert rc == 0
    tree = yaml.safe_load(out)
    assert tree["gateway"]["port"] == 7000  # file
    assert tree["gateway"]["seed"] == 9  # env over file
    assert tree["gateway"]["retries"]["max_attempts"] == 4  # flag over file
    assert tree["gateway"]["timeouts"]["connect_s"] == 4.0  # a default, filled in
    assert tree["endpoints"]["static"][0]["address"] == "10.0.0.1:8000"
    assert LanternaConfig.model_validate(tree).gateway.port == 7000  # what it prints loads back


def test_show_resolves_the_scheduler_file(capsys, tmp_path: Path) -> None:
    epp = tmp_path / "epp.yaml"
    epp.write_text("apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n- type: queue-scorer\n"
                   "schedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: queue-scorer\n")
    rc, out, _ = _show(capsys, "--scheduler-config", str(epp), "--scheduler-as-given")
    assert rc == 0 and yaml.safe_load(out)["scheduler"] == str(epp)
    rc, out, _ = _show(capsys, "--scheduler-config", str(epp))
    sched = yaml.safe_load(out)["scheduler"]
    assert rc == 0 and sched["kind"] == "EndpointPickerConfig" and sched["plugins"] == [{"type": "queue-scorer"}]


def test_show_without_a_scheduler_prints_the_default_policy_in_full(capsys, tmp_path: Path) -> None:
    """Nothing configured: the lanterna policy, inlined (never ``scheduler: null``), and it loads back."""
    rc, out, _ = _show(capsys)
    sched = yaml.safe_load(out)["scheduler"]
    assert rc == 0 and parse_epp_config(sched) == lanterna_recommended_config()
    rc, out, _ = _show(capsys, "--scheduler-as-given")
    assert yaml.safe_load(out)["scheduler"] == DEFAULT_SCHEDULER == "lanterna"
    cfg = tmp_path / "stack.yaml"  # a config naming a policy wins over the default
    cfg.write_text("scheduler: llm-d\n")
    rc, out, _ = _show(capsys, "--config", str(cfg))
    assert parse_epp_config(yaml.safe_load(out)["scheduler"]) == default_epp_config()


@pytest.mark.parametrize("argv", [["--set", "gateway.port=notaport"], ["--set", "gateway.nope=1"]])
def test_bad_config_is_one_line_and_exit_2(capsys, argv: list[str]) -> None:
    rc, out, err = _show(capsys, *argv)
    assert rc == 2 and out == "" and err.count("\n") == 1 and err.startswith("lanterna config: error:")
