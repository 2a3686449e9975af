"""``lanterna config show``: print the effective configuration tree as YAML.

    lanterna config show --config stack.yaml --set gateway.port=9000 [--scheduler-as-given]

The same precedence as ``lanterna gateway`` (YAML file < ``LANTERNA_*`` env < flags), so what it prints is
what the gateway would run with, defaults included: ``scheduler`` is the validated ``EndpointPickerConfig``
that would run (the named default policy, a shorthand or a file, inlined), unless ``--scheduler-as-given``
keeps the path or name. A bad config prints one line and exits 2, like the gateway.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from lanterna.cli.gateway import add_common_arguments, fail, load_from_args
from lanterna.errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="config_command", metavar="ACTION")
    show = sub.add_parser("show", help="print the effective config tree as YAML",
                          description="Print the effective config tree (file < env < flags, defaults filled in).")
    add_common_arguments(show)
    show.add_argument("--scheduler-as-given", action="store_true",
                      help="print `scheduler` as configured (a path or a policy name) instead of the "
                           "EndpointPickerConfig it stands for")
    show.add_argument("--resolve-scheduler", action="store_true", help=argparse.SUPPRESS)  # the default now


def effective_tree(args: argparse.Namespace) -> dict[str, Any]:
    """The config tree ``show`` prints (raises ConfigError)."""
    cfg = load_from_args(args)
    tree: dict[str, Any] = cfg.model_dump(mode="json")
    if not getattr(args, "scheduler_as_given", False):
        from lanterna.scheduler import default_epp_config, load_epp_config

        epp = load_epp_config(cfg.scheduler) if cfg.scheduler else default_epp_config()
        tree["scheduler"] = epp.model_dump(mode="json", exclude_none=True)
    return tree


def run(args: argparse.Namespace) -> int:
    if getattr(args, "config_command", None) != "show":
        return fail("config", "give an action: show")
    try:
        tree = effective_tree(args)
    except ConfigError as exc:
        return fail("config", str(exc))
    sys.stdout.write(yaml.safe_dump(tree, sort_keys=False, default_flow_style=False))
    return 0
