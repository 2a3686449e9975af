"""``lanterna autoscale``: the live autoscaling loop next to a running gateway (WVA's role).

    lanterna autoscale --gateway http://127.0.0.1:8000 --endpoint 10.0.0.5:8000 --endpoint 10.0.0.6:8000 \\
        --variant llama-8b --accelerator H100 --min-replicas 1 --max-replicas 8 [--port 9100]
    lanterna autoscale ... --actuate k8s --deployment llama-8b --namespace llm-d   # patch deployments/scale
    lanterna autoscale ... --selector app=vllm,llm-d.ai/role=both --target-port 8000  # endpoints: ready pods

Every ``--interval`` it reads the gateway's and the endpoints' ``/metrics``, runs the saturation policy (WVA V1
thresholds) with HPA-like stabilisation, and publishes ``wva_desired_replicas`` / ``wva_current_replicas`` /
``wva_desired_ratio`` {variant_name, namespace, accelerator_type} on its own ``/metrics`` (for HPA/KEDA), and with
``--actuate k8s`` sets the Deployment's scale subresource itself. ``lanterna up --autoscale`` runs the same loop
in-process with sims as replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
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
    a("--selector", default=None, metavar="K=V[,K=V]",
      help="instead of --endpoint: the ready pods matching this label selector (in --namespace) are the variant's "
           "endpoints, followed by a Kubernetes watch (RBAC: pods get/list/watch)")
    a("--target-port", type=int, action="append", default=[], metavar="PORT",
      help="with --selector: model-server port(s) on each pod (default 8000)")
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


@dataclass(slots=True)
class Sources:
    """Where the loop's endpoints come from and what it actuates; ``close()`` stops the watch and the client."""

    endpoints: Callable[[], dict[str, list[str]]]
    actuator: Any = None
    disc: Any = None
    api: Any = None

    async def close(self) -> None:
        if self.disc is not None:
            await self.disc.close()
        if self.api is not None:
            await self.api.close()


async def open_sources(args: argparse.Namespace, variant: str) -> Sources:
    """``--endpoint`` (static) or ``--selector`` (ready pods, watched), and ``--actuate k8s`` (scale subresource),
    sharing one API client."""
    from lanterna.errors import ConfigError

    actuator = api = disc = None
    if args.actuate == "k8s" and not args.deployment:
        raise ConfigError("--actuate k8s needs --deployment")
    if args.selector is not None and args.endpoint:
        raise ConfigError("give --endpoint or --selector, not both")
    if args.target_port and args.selector is None:
        raise ConfigError("--target-port needs --selector")
    if args.actuate == "k8s" or args.selector is not None:
        from lanterna.k8s.discovery import DiscoverySpec, KubeDiscovery, make_api_client

        try:  # without --selector the spec only carries the credentials' source; nothing is watched then
            spec = DiscoverySpec(namespace=args.namespace, pool=None if args.selector else "-",
                                 selector=args.selector, target_ports=tuple(args.target_port or [8000]),
                                 kubeconfig=args.kubeconfig)
        except ValueError as exc:
            raise ConfigError(f"--selector: {exc}") from None
        api = await make_api_client(spec)
        if args.selector is not None:
            disc = KubeDiscovery(api, spec, _NoSink())
            disc.start()
    if args.actuate == "k8s":
        from lanterna.k8s.scale import DeploymentScaler

        actuator = DeploymentScaler(api, args.namespace, {variant: args.deployment})
    static = {variant: list(args.endpoint)}

    def endpoints() -> dict[str, list[str]]:
        return {variant: list(disc.endpoints)} if disc is not None else static

    return Sources(endpoints, actuator, disc, api)


async def _main(args: argparse.Namespace) -> int:
    from aiohttp import web
    from prometheus_client import generate_latest

    from lanterna.autoscale.loop import AutoscaleLoop, LoopConfig
    from lanterna.cli.gateway import stop_on_signal
    from lanterna.errors import ConfigError

    scaler, variant = build_scaler(args, args.variant or "default")
    sources = await open_sources(args, variant.name)
    actuator, endpoints = sources.actuator, sources.endpoints
    loop = AutoscaleLoop(scaler, [variant], LoopConfig(args.gateway, args.namespace, args.interval),
                         endpoints, actuator)

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
        await sources.close()
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    task = asyncio.create_task(loop.run())
    try:
        with stop_on_signal() as stop:
            await stop.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()
        await sources.close()
    return 0


class _NoSink:
    """Discovery's sink when only the set of ready pods is wanted (``KubeDiscovery.endpoints``)."""

    async def add_endpoint(self, ep: Any) -> None:
        return None

    async def remove_endpoint(self, endpoint_id: str) -> None:
        return None


def run(args: argparse.Namespace) -> int:
    from lanterna.cli.gateway import run_main
    from lanterna.obs.logs import setup_logging

    setup_logging(args.log_format, args.log_level)
    try:
        return run_main("autoscale", _main(args))
    finally:
        sys.stdout.flush()
