"""``lanterna sidecar``: the decode pod's P/D proxy (llm-d's routing sidecar; placement ``sidecar``).

    lanterna sidecar --decode 127.0.0.1:8200 --port 8000 --allow-prefiller 10.0.0.7:8000 [--config FILE]

Requests carrying ``x-prefiller-host-port`` get their prefill run on that endpoint (only if it is allowed:
``--allow-prefiller``, ``sidecar.allowed_prefillers``, or an ``endpoints.static`` entry labelled
``llm-d.ai/role: prefill``), then the decode on ``--decode`` with the returned ``kv_transfer_params``.
"""

from __future__ import annotations

import argparse
from typing import Any

from lanterna.errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--config", default=None, metavar="FILE", help="YAML config (its `sidecar` and `endpoints` sections)")
    a("--host", default=None, help="listen address (default: 127.0.0.1, sidecar.host)")
    a("--port", type=int, default=None, help="listen port (default: 8000, sidecar.port)")
    a("--decode", default=None, metavar="HOST:PORT",
      help="the local model server (default: 127.0.0.1:8200, sidecar.decode)")
    a("--allow-prefiller", action="append", default=[], metavar="HOST:PORT",
      help="a prefill endpoint this sidecar may call; repeat for several")
    a("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
      help="dotted override, e.g. sidecar.prefill_timeout_s=30")
    a("--log-format", choices=["json", "text"], default="json", help="log line format")


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    """The effective config and allow-list for these flags (raises ConfigError)."""
    from lanterna.config.loader import load_config
    from lanterna.endpoints.types import ROLE_BOTH, ROLE_LABEL, ROLE_PREFILL
    from lanterna.routing.pd import PrefillerAllowList

    base: dict[str, Any] = {}
    for key, val in (("host", args.host), ("port", args.port), ("decode", args.decode)):
        if val is not None:
            base[f"sidecar.{key}"] = val
    cfg = load_config(args.config, base=base, overrides=args.overrides)
    sc = cfg.sidecar
    targets = [*sc.allowed_prefillers, *args.allow_prefiller]
    if sc.allow_labelled_endpoints:
        targets += [e.address for e in cfg.endpoints.static if e.labels.get(ROLE_LABEL) in (ROLE_PREFILL, ROLE_BOTH)]
    try:
        allow = PrefillerAllowList.of(targets)
    except Exception as exc:  # InvalidRequest from a malformed entry: a config error here
        raise ConfigError(f"sidecar allow-list: {exc}") from None
    return cfg, allow


async def _serve(cfg: Any, allow: Any) -> int:
    from aiohttp import web

    from lanterna.cli.gateway import stop_on_signal
    from lanterna.sidecar import Sidecar

    sc = cfg.sidecar
    runner = web.AppRunner(Sidecar(sc, allow).build_app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, sc.host, sc.port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {sc.host}:{sc.port}: {exc.strerror or exc}") from None
    print(f"lanterna sidecar on http://{sc.host}:{sc.port} -> decode {sc.decode}; prefillers allowed: "
          f"{', '.join(sorted(allow.allowed)) or '(none)'}", flush=True)
    try:
        with stop_on_signal() as stop:
            await stop.wait()
    finally:
        await runner.cleanup()
    return 0


def run(args: argparse.Namespace) -> int:
    from lanterna.cli.gateway import fail, install_uvloop, run_main
    from lanterna.obs.logs import setup_logging

    try:
        cfg, allow = load(args)
    except ConfigError as exc:
        return fail("sidecar", str(exc))
    setup_logging(args.log_format, "INFO", access_log="off")
    install_uvloop()
    return run_main("sidecar", _serve(cfg, allow))
