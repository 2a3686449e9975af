"""The ``lanterna`` command: one thin module per subcommand, imported lazily so ``--help`` is instant."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help). Each module defines ``add_arguments(parser)`` and ``run(args) -> int``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "up": ("lanterna.cli.up", "gateway + simulated (or given) replicas on loopback: the main job"),
    "gateway": ("lanterna.cli.gateway", "the OpenAI-compatible gateway in front of model servers"),
    "sim": ("lanterna.cli.sim", "a vLLM-compatible simulated model server"),
    "models": ("lanterna.cli.models", "build local test models (tiny random-weight Llama + tokenizer)"),
    "bench": ("lanterna.cli.bench", "benchmarks: run, sweep, plot, compare"),
    "config": ("lanterna.cli.config", "configuration: show the effective tree"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lanterna", description="Control plane for distributed LLM inference on vLLM.")
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
