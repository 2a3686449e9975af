"""``lanterna epp``: the endpoint picker behind Envoy (Gateway API Inference Extension), same scheduler as the gateway.

    lanterna epp --endpoint 10.0.0.5:8000 --endpoint 10.0.0.6:8000 --grpc-port 9002 --host 0.0.0.0

Envoy's ``ext_proc`` filter asks it where each request goes; it answers ``x-gateway-destination-endpoint``
(primary, then fallbacks) and reads the response back for load accounting. Same endpoint sources and config
as ``lanterna gateway`` (``--endpoint``/``--model``, ``--config``, ``--scheduler-config``, ``--set``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lanterna.cli.gateway import (
    add_common_arguments,
    fail,
    install_uvloop,
    load_with_discovery,
    run_main,
    stop_on_signal,
)
from lanterna.errors import ConfigError

_MODES = ("full-duplex", "buffered")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from lanterna.k8s.discovery_args import add_discovery_arguments

    add_common_arguments(p, port=False)
    add_discovery_arguments(p)
    a = p.add_argument
    a("--grpc-port", type=int, default=9002, help="ext_proc gRPC port (0: any free port)")
    a("--health-port", type=int, default=9003, help="gRPC health port (-1: only on the ext_proc port)")
    a("--metrics-port", type=int, default=9090, help="Prometheus /metrics port (-1: none)")
    a("--request-body-mode", choices=_MODES, default="full-duplex",
      help="the Envoy filter's request_body_mode (a request's protocol_config, when Envoy sends one, wins)")
    a("--response-body-mode", choices=_MODES, default="full-duplex",
      help="the Envoy filter's response_body_mode (a request's protocol_config, when Envoy sends one, wins)")


async def _serve(cfg: Any, args: argparse.Namespace, sources: list[Any]) -> int:
    from lanterna.epp import EppOptions, Modes, serve_epp
    from lanterna.epp.messages import BODY_MODES
    from lanterna.gateway.app import create_gateway

    gw = create_gateway(cfg)
    opts = EppOptions(
        host=cfg.gateway.host, grpc_port=args.grpc_port,
        health_port=None if args.health_port < 0 else args.health_port,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        modes=Modes(BODY_MODES[args.request_body_mode], BODY_MODES[args.response_body_mode],
                    cfg.gateway.max_body_bytes))
    with stop_on_signal() as stop:
        try:
            async with serve_epp(gw, opts, sources) as srv:
                print(f"lanterna epp: ext_proc on {cfg.gateway.host}:{srv.grpc_port}, health {srv.health_port}, "
                      f"metrics {srv.metrics_port} ({len(gw.store)} endpoints)", file=sys.stderr, flush=True)
                await stop.wait()
        except OSError as exc:
            raise ConfigError(f"cannot listen: {exc}") from None
    return 0


def run(args: argparse.Namespace) -> int:
    from lanterna.k8s.discovery_args import KubeEndpointSource
    from lanterna.obs.logs import setup_logging

    try:
        cfg, discovery = load_with_discovery(args)
    except ConfigError as exc:
        return fail("epp", str(exc))
    setup_logging(cfg.gateway.log_format, cfg.gateway.log_level, access_log=None)
    install_uvloop()
    return run_main("epp", _serve(cfg, args, [KubeEndpointSource(discovery)] if discovery else []))
