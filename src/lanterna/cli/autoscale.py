"""``lanterna autoscale``: the live autoscaling loop next to a running gateway (WVA's role).

    lanterna autoscale --gateway http://127.0.0.1:8000 --endpoint 10.0.0.5:8000 --endpoint 10.0.0.6:8000 \\
        --variant llama-8b --accelerator H100 --min-replicas 1 --max-replicas 8 [--port 9100]
    lanterna autoscale ... --actuate k8s --deployment llama-8b --namespace llm-d   # patch deployments/scale

Every ``--interval`` it reads the gateway's and the endpoints' ``/metrics``, runs the saturation policy (WVA V1
thresholds) with HPA-like stabilisation, and publishes ``wva_desired_replicas`` / ``wva_current_replicas`` /
``wva_desired_ratio`` {variant_name, namespace, accelerator_type} on its own ``/metrics`` (for HPA/KEDA), and with
``--actuate k8s`` sets the Deployment's scale subresource itself. ``lanterna up --autoscale`` runs the same loop
in-process with sims as replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any


def add_scaling_arguments(p: argparse.ArgumentParser) -> None:
    """The policy flags ``lanterna autoscale`` and ``lanterna up --autoscale`` share."""
    a = p.add_argument
    a("--min-replicas", type=int, default=0, help="fewest replicas; 0 enables scale to zero")
    a("--max-replicas", type=int, default=4, help="most replicas")
    a("--interval", type=float, default=15.0, metavar="S", help="seconds between decisions")
    a("--scale-to-zero-after", type=float, default=600.0, metavar="S",
      help="idle seconds (no request, nothing queued or running) before going to zero (WVA retention_period)")
    a("--scale-down-window", type=float, default=300.0, metavar="S",
      help="scale down to the highest recommendation of this window (HPA stabilizationWindowSeconds)")
    a("--scale-down-delay", type=float, default=60.0, metavar="S", help="no scale-down this soon after a scale-up")
    a("--scale-period", type=float, default=15.0, metavar="S", help="step limits apply per this period")
    a("--variant", default=None, help="variant name (default: the model name)")
    a("--accelerator", default="", help="accelerator_type label")
    a("--cost", type=float, default=10.0, help="cost per replica-hour (compares variants)")


def build_scaler(args: argparse.Namespace, variant: str) -> tuple[Any, Any]:
    """``(Autoscaler, Variant)`` from the shared flags (saturation policy)."""
    from lanterna.autoscale import (
        Autoscaler,
        AutoscalerConfig,
        SaturationPolicy,
        ScaleToZero,
        ScalingBehavior,
        Variant,
    )
    from lanterna.errors import ConfigError

    if not 0 <= args.min_replicas <= args.max_replicas or args.max_replicas < 1:
        raise ConfigError(f"need 0 <= --min-replicas <= --max-replicas and --max-replicas >= 1, got "
                          f"{args.min_replicas} and {args.max_replicas}")
    if args.interval <= 0:
        raise ConfigError(f"--interval must be > 0, got {args.interval}")
    v = Variant(variant, cost_per_hour=args.cost, accelerator=args.accelerator, min_replicas=args.min_replicas,
                max_replicas=args.max_replicas)
    behavior = ScalingBehavior(scale_down_window_s=args.scale_down_window, period_s=args.scale_period,
                               scale_down_delay_after_up_s=args.scale_down_delay)
    cfg = AutoscalerConfig(behavior=behavior, scale_to_zero=ScaleToZero(args.min_replicas == 0,
                                                                        args.scale_to_zero_after))
    return Autoscaler(SaturationPolicy(), cfg), v


def add_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--gateway", default="http://127.0.0.1:8000", help="the gateway's base URL (its /metrics is read)")
    a("--endpoint", action="append", default=[], metavar="HOST:PORT", help="a model server of the variant (repeat)")
    a("--namespace", default="default", help="namespace label (and the Deployment's namespace with --actuate k8s)")
    a("--host", default="127.0.0.1", help="listen address of the autoscaler's /metrics")
    a("--port", type=int, default=9100, help="listen port of the autoscaler's /metrics")
    a("--actuate", choices=["none", "k8s"], default="none",
      help="none: publish wva_desired_replicas only (HPA/KEDA scale); k8s: patch the Deployment's scale")
    a("--deployment", default=None, help="--actuate k8s: the variant's Deployment")
    a("--kubeconfig", default=None, help="--actuate k8s outside a cluster (default: ~/.kube/config)")
    a("--log-format", choices=["json", "text"], default="json")
    a("--log-level", default="INFO")
    add_scaling_arguments(p)


async def _main(args: argparse.Namespace) -> int:
    from aiohttp import web
    from prometheus_client import generate_latest

    from lanterna.autoscale.loop import AutoscaleLoop, LoopConfig
    from lanterna.errors import ConfigError

    scaler, variant = build_scaler(args, args.variant or "default")
    actuator = api = None
    if args.actuate == "k8s":
        if not args.deployment:
            raise ConfigError("--actuate k8s needs --deployment")
        from lanterna.k8s.discovery import DiscoverySpec, make_api_client
        from lanterna.k8s.scale import DeploymentScaler

        # the spec only carries the credentials' source here; nothing is watched
        api = await make_api_client(DiscoverySpec(namespace=args.namespace, pool=args.deployment,
                                                  kubeconfig=args.kubeconfig))
        actuator = DeploymentScaler(api, args.namespace, {variant.name: args.deployment})
    endpoints = {variant.name: list(args.endpoint)}
    loop = AutoscaleLoop(scaler, [variant], LoopConfig(args.gateway, args.namespace, args.interval),
                         lambda: endpoints, actuator)

    async def metrics(_req: web.Request) -> web.Response:
        return web.Response(body=generate_latest(loop.metrics.registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    task = asyncio.create_task(loop.run())
    stop = asyncio.Event()
    ev = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        ev.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()
        if api is not None:
            await api.close()
    return 0


def run(args: argparse.Namespace) -> int:
    from lanterna.cli.gateway import fail
    from lanterna.errors import ConfigError
    from lanterna.obs.logs import setup_logging

    setup_logging(args.log_format, args.log_level)
    try:
        return asyncio.run(_main(args))
    except ConfigError as exc:
        return fail("autoscale", str(exc))
    except KeyboardInterrupt:
        return 0
    finally:
        sys.stdout.flush()
