"""The ``lanterna`` command: one thin module per subcommand, imported lazily so ``--help`` is instant."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

# subcommand -> (module, one-line help). Each module defines ``add_arguments(parser)`` and ``run(args) -> int``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "up": ("lanterna.cli.up", "gateway + simulated (or given) replicas on loopback: the main job"),
    "gateway": ("lanterna.cli.gateway", "the OpenAI-compatible gateway in front of model servers"),
    "epp": ("lanterna.cli.epp", "Envoy ext_proc endpoint picker (Gateway API Inference Extension EPP)"),
    "sim": ("lanterna.cli.sim", "a vLLM-compatible simulated model server"),
    "sidecar": ("lanterna.cli.sidecar", "the decode pod's P/D proxy: runs the prefill leg (llm-d routing sidecar)"),
    "models": ("lanterna.cli.models", "build local test models (tiny random-weight Llama + tokenizer)"),
    "bench": ("lanterna.cli.bench", "benchmarks: run, sweep, plot, compare"),
    "autoscale": ("lanterna.cli.autoscale", "autoscaler loop: gateway + vLLM metrics -> wva_desired_replicas, "
                  "Deployment scale"),
    "config": ("lanterna.cli.config", "configuration: show the effective tree"),
    "auth": ("lanterna.cli.auth", "API keys: hash-key (hash a key or generate one, print a config snippet)"),
    "offload": ("lanterna.cli.offload", "KV offload tiers: vLLM flags, shared-filesystem evictor"),
    "deploy": ("lanterna.cli.deploy", "Kubernetes: render manifests (gateway or EPP mode, vLLM, RBAC, monitoring)"),
    "plan": ("lanterna.cli.plan", "capacity planning: memory per GPU, SLO sizing, CPU calibration"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default, except where there is none to show (``None``, ``False``, ``[]``): flags
    that default to ``None`` defer to the config file, and their help names the config default instead.
    Descriptions (module docstrings with usage examples) keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Every (sub)parser gets ``HelpFormatter``; ``add_subparsers`` builds children of this class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("lanterna")
    except PackageNotFoundError:  # run from a source tree without an install
        from lanterna import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lanterna", description="Control plane for distributed LLM inference on vLLM.")
    parser.add_argument("--version", action="version", version=f"lanterna {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            p.set_defaults(_missing=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if getattr(args, "_missing", False):
        print(f"lanterna {args.command}: not available in this build", file=sys.stderr)
        return 2
    rc: int = importlib.import_module(args._module).run(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
