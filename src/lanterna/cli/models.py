"""``lanterna models``: build local test models (tiny random-weight Llama, LoRA adapters, the tokenizer)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="WHAT", required=True)
    tiny = sub.add_parser("tiny", help="write a random-weight LlamaForCausalLM (+ tokenizer, optional LoRAs)")
    tiny.add_argument("dir", type=Path, help="output model directory")
    tiny.add_argument("--seed", type=int, default=0, help="weight seed (same seed -> same bytes)")
    tiny.add_argument("--lora", action="append", default=[], metavar="NAME[=DIR]",
                      help="also write a PEFT LoRA adapter NAME into DIR (default: next to the model); repeatable")
    tok = sub.add_parser("tokenizer", help="write the default tokenizer files")
    tok.add_argument("dir", type=Path, help="output directory")
    tok.add_argument("--retrain", action="store_true", help="train it afresh from the stdlib sources")


def run(args: argparse.Namespace) -> int:
    from lanterna.errors import ConfigError

    try:
        return _run(args)
    except ConfigError as exc:  # e.g. the [models] extra is missing
        print(f"lanterna models: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.models_command == "tokenizer":
        if args.retrain:
            from lanterna.models.tokenizer_build import build_tokenizer

            build_tokenizer(args.dir)
        else:
            from lanterna.models.tiny import write_tokenizer

            write_tokenizer(args.dir)
        print(args.dir)
        return 0
    from lanterna.models.lora import write_lora
    from lanterna.models.tiny import write_tiny_model

    model_dir = write_tiny_model(args.dir, seed=args.seed)
    print(model_dir)
    for n, spec in enumerate(args.lora, start=1):
        name, _, target = spec.partition("=")
        out = Path(target) if target else model_dir.resolve().parent / name
        write_lora(out, base_model=model_dir.resolve(), seed=args.seed + 1000 + n)
        print(f"{name}={out}")
    return 0
