"""``lanterna gateway``: the OpenAI-compatible gateway in front of existing model servers.

    lanterna gateway --config stack.yaml [--port 8000] [--endpoint host:port ...] [--set gateway.seed=3]

Config precedence: YAML file < ``LANTERNA_*`` env < flags. A bad config ends in one line and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

from lanterna.errors import ConfigError

# Named policies ``--scheduler-config`` accepts (``lanterna.config.epp.SHORTHANDS``; a test keeps them in step).
# Listed here, not imported, so ``--help`` needs no pydantic.
POLICIES: dict[str, str] = {
    "lanterna": "cost-model-scorer 1 + no-hit-lru-scorer 4: the best measured policy (README 'Results')",
    "llm-d": "llm-d's default weights: queue 2, kv-cache-utilization 2, prefix-cache 3",
    "default": "alias of llm-d",
}


def add_common_arguments(p: argparse.ArgumentParser, *, port: bool = True) -> None:
    """Flags shared by ``gateway``, ``up``, ``epp`` and ``config show``. Those that mirror a config key default to
    ``None`` (so the file and ``LANTERNA_*`` env apply) and name the config default in their help. ``port=False``
    (``epp``, which has its own ports) leaves out ``--port``."""
    from lanterna.config.loader import DEFAULT_SCHEDULER

    a = p.add_argument
    a("--config", default=None, metavar="FILE",
      help="YAML config (LanternaConfig tree: gateway, endpoints, scheduler, ...; see examples/stack.yaml)")
    a("--host", default=None, help="listen address (default: 127.0.0.1, gateway.host)")
    if port:
        a("--port", type=int, default=None, help="listen port (default: 8000, gateway.port)")
    else:
        p.set_defaults(port=None)
    a("--endpoint", action="append", default=[], metavar="[ROLE=]HOST:PORT",
      help="a model server (real vLLM or sim); repeat for several. A P/D role prefix (prefill=, decode=, both=) "
           "sets its llm-d.ai/role label")
    a("--kv-events", dest="endpoint_kv_events", action="append", default=[], metavar="HOST:PORT=ZMQ",
      help="KV-event publisher of an --endpoint for precise routing, e.g. 127.0.0.1:8001=tcp://127.0.0.1:5557 "
           "(the gateway connects to it); repeat per endpoint. Publishers that connect to the gateway instead "
           "use kvindex.zmq_endpoint (e.g. --set kvindex.zmq_endpoint=tcp://*:5557)")
    a("--model", dest="endpoint_model", action="append", default=[], metavar="NAME",
      help="model served by the --endpoint servers (default: discovered from /v1/models)")
    names = "; ".join(f"{k}: {v}" for k, v in POLICIES.items())
    a("--scheduler-config", default=None, metavar="NAME|FILE",
      help=f"llm-d EndpointPickerConfig YAML file (examples/epp/*.yaml) or a named policy ({names}). "
           f"Overrides the config's `scheduler` (default: {DEFAULT_SCHEDULER})")
    a("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
      help="dotted override, e.g. gateway.retries.max_attempts=2")
    a("--log-format", choices=["json", "text"], default=None, help="log line format (default: json, gateway.log_format)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from lanterna.k8s.discovery_args import add_discovery_arguments

    add_common_arguments(p)
    add_workers_argument(p)
    add_discovery_arguments(p)


def add_workers_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="gateway processes sharing the port (SO_REUSEPORT), each with its own scheduler, KV index, "
                        "load accounting and flow control; the parent restarts a crashed one")


def load_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Any:
    """The effective LanternaConfig for these flags (raises ConfigError)."""
    from lanterna.config.loader import DEFAULT_SCHEDULER, load_config

    base = dict(base or {})
    if args.host is not None:
        base["gateway.host"] = args.host
    if args.port is not None:
        base["gateway.port"] = args.port
    if args.log_format is not None:
        base["gateway.log_format"] = args.log_format
    if args.scheduler_config is not None:
        base["scheduler"] = args.scheduler_config
    cfg = load_config(args.config, base=base, overrides=args.overrides, default_scheduler=DEFAULT_SCHEDULER)
    if args.endpoint:
        try:
            extra = [_static_endpoint(a, list(args.endpoint_model)) for a in args.endpoint]
        except ValueError as exc:
            raise ConfigError(f"--endpoint: {str(exc).splitlines()[-1].strip()}") from None
        cfg.endpoints.static = [*cfg.endpoints.static, *extra]
    for item in getattr(args, "endpoint_kv_events", []):
        addr, sep, zmq_addr = item.partition("=")
        spec = next((e for e in cfg.endpoints.static if e.address == addr), None)
        if not sep or not zmq_addr.startswith(("tcp://", "ipc://")):
            raise ConfigError(f"--kv-events {item!r}: expected HOST:PORT=tcp://HOST:KVPORT")
        if spec is None:
            raise ConfigError(f"--kv-events {item!r}: no --endpoint {addr}")
        spec.kv_events = zmq_addr
    return cfg


def _static_endpoint(flag: str, models: list[str]) -> Any:
    """``--endpoint [ROLE=]HOST:PORT``: the role becomes the endpoint's ``llm-d.ai/role`` label."""
    from lanterna.config.model import StaticEndpoint
    from lanterna.endpoints.types import ROLE_BOTH, ROLE_DECODE, ROLE_LABEL, ROLE_PREFILL

    role, sep, address = flag.rpartition("=")
    if not sep:
        return StaticEndpoint(address=flag, models=models)
    if role not in (ROLE_PREFILL, ROLE_DECODE, ROLE_BOTH):
        raise ConfigError(f"--endpoint {flag}: role must be prefill, decode or both, got {role!r}")
    return StaticEndpoint(address=address, models=models, labels={ROLE_LABEL: role})


async def serve_until_signal(cfg: Any, endpoints: list[Any], on_ready: Callable[[Any], Awaitable[None] | None]
                             | None = None, *, worker: bool = False, discovery: Any = None) -> int:
    """Run the gateway until SIGINT/SIGTERM; ``on_ready(gateway)`` runs once it listens. A ``worker`` (one of
    ``--workers N``) binds with SO_REUSEPORT and tags each response with its pid (``x-lanterna-worker``).
    ``discovery`` (a ``lanterna.k8s.discovery.DiscoverySpec``): endpoints come and go with Kubernetes pods."""
    from lanterna.gateway.app import build_app, build_metrics_only_app, create_gateway, serve

    gw = create_gateway(cfg, endpoints)
    app = build_app(gw)
    if worker:
        from lanterna.cli.workers import tag_responses

        tag_responses(app)
    runners = []
    disc = None
    with stop_on_signal() as stop:
        try:
            try:
                runners.append(await serve(app, cfg.gateway.host, cfg.gateway.port, reuse_port=worker))
                if cfg.gateway.metrics_port is not None:
                    runners.append(await serve(build_metrics_only_app(gw), cfg.gateway.host, cfg.gateway.metrics_port, reuse_port=worker))
            except OSError as exc:
                raise ConfigError(f"cannot listen on {cfg.gateway.host}: {exc.strerror}") from None
            if discovery is not None:
                from lanterna.k8s.discovery_args import start_discovery

                disc = await start_discovery(discovery, gw)
                await disc.wait_synced(60.0)
            tune_gc()
            if on_ready is not None:
                res = on_ready(gw)
                if asyncio.iscoroutine(res):
                    await res
            await stop.wait()
            # Graceful: /ready goes 503 and new requests are refused while in-flight ones (streams too) finish.
            if gw.shutdown is not None:
                left = await gw.shutdown.drain(cfg.gateway.limits.drain_timeout_s)
                if left:
                    print(f"lanterna: {left} request(s) still running at the drain deadline; closing them",
                          file=sys.stderr)
        finally:
            if disc is not None:
                await disc.close()
            for runner in reversed(runners):
                await runner.cleanup()
    return 0


# Young-generation threshold once serving. CPython's default (700 net container allocations) runs a collection
# every ~1-2 ms at 1,000 req/s; the request path frees nearly everything by refcount, so a larger nursery
# costs little memory and collects a tenth as often.
_GC_GEN0 = 7000


def tune_gc() -> None:
    """Once startup is done: move everything allocated so far (modules, config, pools) out of the collector's
    reach (``gc.freeze``) and collect the young generation less often. Without this a full collection walks
    every startup object, a 10-70 ms stall at p99 under load (benchmarks/gateway_overhead.py). Leaves
    cycle collection on; ``LANTERNA_GC=default`` skips the tuning (for A/B measurements)."""
    if os.environ.get("LANTERNA_GC") == "default":
        return
    import gc

    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(_GC_GEN0, g1, g2)


def install_uvloop() -> None:
    if os.environ.get("LANTERNA_EVENT_LOOP") == "asyncio":  # for A/B measurements
        return
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def fail(command: str, message: str) -> int:
    print(f"lanterna {command}: error: {message}", file=sys.stderr)
    return 2


@contextlib.contextmanager
def stop_on_signal() -> Iterator[asyncio.Event]:
    """An event SIGINT/SIGTERM sets, for a server's ``await stop.wait()``. Entered before the server starts, so
    a signal during startup still stops it cleanly; the handlers are removed again on exit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_main(command: str, main: Coroutine[Any, Any, int]) -> int:
    """A command's ``asyncio.run``: a ``ConfigError`` becomes its error line (exit 2), Ctrl-C exit 0."""
    try:
        return asyncio.run(main)
    except ConfigError as exc:
        return fail(command, str(exc))
    except KeyboardInterrupt:
        return 0


def load_with_discovery(args: argparse.Namespace) -> tuple[Any, Any]:
    """``gateway``/``epp``: the config plus the Kubernetes ``DiscoverySpec`` (None without ``--pool``/
    ``--selector``); a ``ConfigError`` when the flags are bad or name no endpoints at all."""
    from lanterna.k8s.discovery_args import spec_from_args

    cfg = load_from_args(args)
    try:
        discovery = spec_from_args(args, args.endpoint_model)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not cfg.endpoints.static and discovery is None:
        raise ConfigError("no endpoints: give --endpoint HOST:PORT, --pool NAME, --selector K=V or "
                          "endpoints.static in the config")
    return cfg, discovery


def run(args: argparse.Namespace) -> int:
    from lanterna.obs.logs import setup_logging

    try:
        cfg, discovery = load_with_discovery(args)
    except ConfigError as exc:
        return fail("gateway", str(exc))
    setup_logging(cfg.gateway.log_format, cfg.gateway.log_level, access_log=cfg.gateway.access_log)
    install_uvloop()
    if args.workers != 1 and discovery is not None:
        return fail("gateway", "--workers with Kubernetes discovery: run more replicas instead")
    if args.workers != 1:
        from lanterna.cli.workers import run_supervised

        return run_supervised("gateway", args.workers, cfg)

    def banner(gw: Any) -> None:
        print(f"lanterna gateway listening on http://{cfg.gateway.host}:{cfg.gateway.port}/v1 "
              f"({len(gw.store)} endpoints)", file=sys.stderr, flush=True)

    return run_main("gateway", serve_until_signal(cfg, [], banner, discovery=discovery))
