"""``lanterna auth``: API key tools. Keys are stored hashed; this prints the hash and a config snippet.

    lanterna auth hash-key --generate --tenant acme --max-priority 10 --rps 5 --tpm 60000
    printf %s "$KEY" | lanterna auth hash-key --tenant acme      # hash an existing key read from stdin
"""

from __future__ import annotations

import argparse
import sys

import yaml


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="auth_command", metavar="ACTION")
    h = sub.add_parser("hash-key", help="hash a key from stdin (or --generate one); print a keys-file entry")
    a = h.add_argument
    a("--generate", action="store_true", help="make a new random key and print it once (store it safely)")
    a("--tenant", default="default", help="tenant = fairness id of the key's requests")
    a("--name", default="", help="label for logs")
    a("--max-priority", type=int, default=0, help="priority ceiling")
    a("--rps", type=float, default=None, help="requests per second")
    a("--burst", type=int, default=None, help="request burst")
    a("--tpm", type=float, default=None, help="tokens per minute (prompt estimate + max_tokens)")
    a("--model", dest="models", action="append", default=None, help="allowed model; repeat (default: all)")
    a("--admin", action="store_true", help="print an auth.admin_keys entry instead of a client key entry")


def run(args: argparse.Namespace) -> int:
    from lanterna.auth.keys import generate_key, hash_key

    if getattr(args, "auth_command", None) != "hash-key":
        print("usage: lanterna auth hash-key [--generate] [--tenant T] ...", file=sys.stderr)
        return 2
    if args.generate:
        key = generate_key()
        print(f"key: {key}", file=sys.stderr)
    else:
        key = sys.stdin.read().strip()
        if not key:
            print("lanterna auth: error: no key on stdin (or pass --generate)", file=sys.stderr)
            return 2
    digest = hash_key(key)
    if args.admin:
        print(yaml.safe_dump({"auth": {"admin_keys": [digest]}}, sort_keys=False), end="")
        return 0
    entry: dict[str, object] = {"hash": digest, "tenant": args.tenant}
    optional = {"name": args.name or None, "max_priority": args.max_priority or None, "requests_per_s": args.rps,
                "burst": args.burst, "tokens_per_min": args.tpm, "models": args.models}
    entry.update({k: v for k, v in optional.items() if v is not None})
    print(yaml.safe_dump({"keys": [entry]}, sort_keys=False), end="")
    return 0
