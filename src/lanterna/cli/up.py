"""``lanterna up``: the gateway plus N simulated replicas on loopback (or given endpoints): the main job.

    lanterna up [--replicas 4] [--port 8000] [--model NAME] [--sim-arg=--timing=constant ...]
    lanterna up --endpoint 127.0.0.1:8100 --endpoint 127.0.0.1:8101   # real vLLM servers, no sims
    lanterna up --workers 2                                            # two gateway processes, one port
    lanterna up --prefill-replicas 1 --decode-replicas 3 [--pd-placement sidecar]   # P/D (xPyD) sims
    lanterna up --endpoint prefill=10.0.0.5:8000 --endpoint decode=10.0.0.6:8000     # P/D real servers
    lanterna up --autoscale --min-replicas 0 --max-replicas 4 --cold-start 5          # sims come and go

Prints where to send requests; Ctrl-C or SIGTERM stops the gateway, then every replica.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import sys
from collections.abc import Awaitable
from typing import Any

from lanterna.cli.gateway import (
    add_common_arguments,
    add_workers_argument,
    fail,
    install_uvloop,
    load_from_args,
    run_main,
    serve_until_signal,
)
from lanterna.endpoints.types import ROLE_LABEL
from lanterna.errors import ConfigError

DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    add_workers_argument(p)
    a = p.add_argument
    a("--replicas", type=int, default=4, help="simulated replicas to start (ignored with --endpoint)")
    a("--sim-model", default=DEFAULT_MODEL, help="model name the simulated replicas serve")
    a("--sim-arg", action="append", default=[], metavar="ARG",
      help="extra flag for every `lanterna sim` (repeat; e.g. --sim-arg=--timing --sim-arg=constant)")
    a("--no-kv-events", action="store_true", help="start the sims without KV-event publishers")
    a("--prefill-replicas", type=int, default=0, metavar="N",
      help="P/D: simulated prefill replicas (with --decode-replicas; replaces --replicas)")
    a("--decode-replicas", type=int, default=0, metavar="M", help="P/D: simulated decode replicas")
    a("--pd-placement", choices=["gateway", "sidecar"], default=None,
      help="P/D: who runs the prefill leg: the gateway, or a `lanterna sidecar` started in front of each decode "
           "sim (default: gateway.pd.placement)")
    a("--pd-threshold", type=int, default=256, metavar="TOKENS",
      help="P/D: disaggregate only when the decode endpoint would compute at least this many uncached prompt "
           "tokens (prefix-based-pd-decider nonCachedTokens; used when no --scheduler-config is given)")
    a("--start-timeout", type=float, default=60.0, help="seconds to wait for replicas to become healthy")
    a("--autoscale", action="store_true",
      help="start --min-replicas sims and let the autoscaler (saturation policy) add and remove sims; at zero, "
           "requests wait in flow control for the cold start")
    a("--cold-start", type=float, default=0.0, metavar="S", help="--autoscale: each sim's startup delay")
    from lanterna.cli.autoscale import add_scaling_arguments

    add_scaling_arguments(p)


def _print_table(cfg: Any, endpoints: list[Any], models: list[str], workers: int = 1) -> None:
    from rich.console import Console
    from rich.table import Table

    base = f"http://{cfg.gateway.host}:{cfg.gateway.port}"
    table = Table(title="lanterna is up", title_justify="left")
    table.add_column("what")
    table.add_column("where")
    table.add_row("OpenAI API", f"{base}/v1  (model: {', '.join(models) or '?'})")
    table.add_row("scheduler", str(cfg.scheduler) if isinstance(cfg.scheduler, str) else "(inline EndpointPickerConfig)")
    if workers > 1:
        table.add_row("workers", f"{workers} processes on one port (response header x-lanterna-worker: pid)")
    table.add_row("metrics", f"{base}/metrics" + ("  (per worker)" if workers > 1 else ""))
    table.add_row("endpoints", f"{base}/debug/endpoints")
    if any(ROLE_LABEL in (e.labels or {}) for e in endpoints):
        table.add_row("P/D", f"prefill leg run by the {cfg.gateway.pd.placement}")
    for ep in endpoints:  # Endpoint or StaticEndpoint
        kv = getattr(ep, "kv_events_endpoint", None) or getattr(ep, "kv_events", None)
        role = (ep.labels or {}).get(ROLE_LABEL)
        table.add_row(f"replica ({role})" if role else "replica",
                      f"http://{ep.address}" + (f"  kv events {kv}" if kv else ""))
    model = models[0] if len(models) == 1 else "MODEL"
    example = (f"curl {base}/v1/completions -H 'content-type: application/json' "
               f"-d '{{\"model\": \"{model}\", \"prompt\": \"Hello\", \"max_tokens\": 16}}'")
    console = Console(stderr=False)
    console.print(table)
    console.print(f"try: {example}", soft_wrap=True)
    console.print("Ctrl-C stops everything.")
    sys.stdout.flush()


async def _main(args: argparse.Namespace, cfg: Any) -> int:
    from lanterna.endpoints.types import Endpoint

    endpoints: list[Endpoint] = []
    launcher: Any = None
    model: str | None = None
    pd = args.prefill_replicas > 0 or args.decode_replicas > 0
    if args.pd_placement is not None:
        cfg.gateway.pd.placement = args.pd_placement
    if pd or any(ROLE_LABEL in e.labels for e in cfg.endpoints.static):
        if args.scheduler_config is None:
            cfg.scheduler = pd_scheduler(args.pd_threshold)
    if pd and not cfg.endpoints.static:
        if args.prefill_replicas < 1 or args.decode_replicas < 1:
            raise ConfigError("P/D needs --prefill-replicas >= 1 and --decode-replicas >= 1")
        launcher = _launcher(args, cfg, list(args.sim_arg), args.start_timeout)
        model = args.sim_model
        print(f"starting {args.prefill_replicas} prefill + {args.decode_replicas} decode simulated replicas of "
              f"{model} (prefill leg: {cfg.gateway.pd.placement}) ...", file=sys.stderr, flush=True)
        replicas = await _started(launcher.start_pd(args.prefill_replicas, args.decode_replicas,
                                                    sidecars=cfg.gateway.pd.placement == "sidecar"))
        endpoints = [Endpoint(id=r.address, address=r.address, models=frozenset({model}),
                              labels={ROLE_LABEL: r.role or "both"},
                              kv_events_endpoint=(r.sidecar_for or r).kv_events_endpoint) for r in replicas]
    elif args.autoscale and not cfg.endpoints.static:
        from lanterna.cli.autoscale import build_scaler

        scaler, variant = build_scaler(args, args.variant or args.sim_model)
        if args.workers != 1:
            raise ConfigError("--autoscale runs one gateway process (--workers 1)")
        if not cfg.flowcontrol.enabled:
            raise ConfigError("--autoscale needs flow control (requests wait in its queue at zero replicas)")
        model = args.sim_model
        cfg.flowcontrol.hold_models = [*cfg.flowcontrol.hold_models, model]
        launcher = _launcher(args, cfg, [*args.sim_arg, "--startup-delay", str(args.cold_start)],
                             args.start_timeout + args.cold_start)
        print(f"starting {args.min_replicas} simulated replicas of {model} (autoscaling {args.min_replicas}.."
              f"{args.max_replicas}) ...", file=sys.stderr, flush=True)
        started = await _started(launcher.start(args.min_replicas))
        endpoints = _endpoints(started, model)
        try:
            return await _serve_autoscaled(args, cfg, endpoints, model, launcher, started, scaler, variant)
        finally:
            await launcher.stop()
    elif not cfg.endpoints.static:
        if args.replicas < 1:
            raise ConfigError(f"--replicas must be >= 1, got {args.replicas}")
        model = args.sim_model
        launcher = _launcher(args, cfg, list(args.sim_arg), args.start_timeout)
        print(f"starting {args.replicas} simulated replicas of {model} ...", file=sys.stderr, flush=True)
        endpoints = _endpoints(await _started(launcher.start(args.replicas)), model)
    try:
        if args.workers != 1:
            return await _supervise(args, cfg, endpoints, model)

        def table(gw: Any) -> None:
            _print_table(cfg, gw.store.all(), [model] if model else sorted(gw.store.known_models()))

        return await serve_until_signal(cfg, endpoints, table)
    finally:
        if launcher is not None:
            await launcher.stop()


def _launcher(args: argparse.Namespace, cfg: Any, sim_args: list[str], timeout_s: float) -> Any:
    """A launcher of ``args.sim_model`` replicas, stopped at exit too; the gateway then tokenizes with Lanterna's
    packaged tokenizer, as the sims do."""
    from lanterna.cluster.launcher import SimLauncher

    launcher = SimLauncher(model=args.sim_model, host="127.0.0.1", sim_args=sim_args,
                           kv_events=not args.no_kv_events, start_timeout_s=timeout_s)
    atexit.register(launcher.stop_sync)
    if cfg.kvindex.tokenizer is None:
        cfg.kvindex.tokenizer = "default"
    return launcher


async def _started(start: Awaitable[list[Any]]) -> list[Any]:
    """The replicas ``start`` brings up; a launch failure is a one-line ``ConfigError``."""
    from lanterna.cluster.launcher import LaunchError

    try:
        return await start
    except LaunchError as exc:
        raise ConfigError(str(exc)) from None


def _endpoints(replicas: list[Any], model: str) -> list[Any]:
    from lanterna.endpoints.types import Endpoint

    return [Endpoint(id=r.address, address=r.address, models=frozenset({model}),
                     kv_events_endpoint=r.kv_events_endpoint) for r in replicas]


async def _serve_autoscaled(args: argparse.Namespace, cfg: Any, endpoints: list[Any], model: str, launcher: Any,
                            started: list[Any], scaler: Any, variant: Any) -> int:
    """The gateway with the autoscaling loop beside it: the loop scrapes the gateway's own ``/metrics`` and the
    sims', a request held at zero wakes it at once, and ``LocalActuator`` starts, adds, drains and stops sims."""
    from lanterna.autoscale.loop import AutoscaleLoop, LoopConfig
    from lanterna.cluster.autoscale_local import LocalActuator

    tasks: list[asyncio.Task[None]] = []
    actuators: list[LocalActuator] = []

    def on_ready(gw: Any) -> None:
        act = LocalActuator(launcher, gw, variant.name, drain_timeout_s=cfg.gateway.limits.drain_timeout_s)
        act.adopt(started)
        loop = AutoscaleLoop(scaler, [variant], LoopConfig(f"http://{cfg.gateway.host}:{cfg.gateway.port}",
                                                           interval_s=args.interval), act.endpoints, act)
        gw.on_hold = loop.wake
        actuators.append(act)
        tasks.append(asyncio.create_task(loop.run(), name="autoscale"))
        _print_table(cfg, gw.store.all(), [model])
        print(f"autoscaling {variant.name}: {args.min_replicas}..{args.max_replicas} replicas, saturation policy, "
              f"every {args.interval:g}s (cold start {args.cold_start:g}s)", flush=True)

    try:
        return await serve_until_signal(cfg, endpoints, on_ready)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for act in actuators:
            await act.close()


def pd_scheduler(threshold: int) -> dict[str, Any]:
    from lanterna.cluster.policies import pd_policy_doc

    return pd_policy_doc(threshold)


async def _supervise(args: argparse.Namespace, cfg: Any, endpoints: list[Any], model: str | None) -> int:
    """``--workers N``: the sims' endpoints go into the config every worker loads."""
    from lanterna.cli.workers import supervise
    from lanterna.config.model import StaticEndpoint

    cfg.endpoints.static = [*cfg.endpoints.static, *(
        StaticEndpoint(address=ep.address, models=sorted(ep.models), kv_events=ep.kv_events_endpoint,
                       labels=dict(ep.labels))
        for ep in endpoints)]
    models = [model] if model else sorted({m for s in cfg.endpoints.static for m in s.models})
    return await supervise(cfg, args.workers, lambda: _print_table(cfg, cfg.endpoints.static, models, args.workers))


def run(args: argparse.Namespace) -> int:
    from lanterna.obs.logs import setup_logging

    try:
        cfg = load_from_args(args)
    except ConfigError as exc:
        return fail("up", str(exc))
    setup_logging(cfg.gateway.log_format, cfg.gateway.log_level, access_log=cfg.gateway.access_log)
    install_uvloop()
    return run_main("up", _main(args, cfg))
