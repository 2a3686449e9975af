"""``lanterna sim``: a vLLM-compatible simulated model server (flags spelled as vLLM spells them).

Bad flags end in one line on stderr and exit status 2, never a traceback: the launcher and CI read it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any, NoReturn

log = logging.getLogger("lanterna.sim")


class FlagError(ValueError):
    pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    def one_line_error(message: str) -> NoReturn:
        print(f"lanterna sim: error: {message}", file=sys.stderr)
        sys.exit(2)

    p.error = one_line_error  # type: ignore[method-assign]
    a = p.add_argument
    a("--model", required=True, help="model name or path (served name unless --served-model-name)")
    a("--host", default="127.0.0.1")
    a("--port", type=int, default=8000)
    a("--profile", default="llama-3.1-8b-h100", help="hardware/model profile for step times and KV capacity")
    a("--timing", default="physics", choices=["physics", "constant", "per-token"])
    a("--time-scale", type=float, default=1.0, help="real seconds per simulated second (0: no sleeping)")
    a("--tokenizer", default=None, help="tokenizer dir or tokenizer.json (default: the packaged one)")
    a("--seed", type=int, default=0)
    a("--served-model-name", nargs="+", default=None)
    a("--block-size", type=int, default=16)
    a("--max-num-seqs", type=int, default=256)
    a("--max-num-batched-tokens", type=int, default=8192)
    a("--max-model-len", type=int, default=8192)
    a("--num-gpu-blocks-override", type=int, default=None)
    a("--gpu-memory-utilization", type=float, default=0.9)
    a("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True)
    a("--kv-events-config", default=None, help="vLLM's KV-events JSON (zmq publisher)")
    a("--kv-event-encoding", default="map", choices=["map", "array"])
    a("--enable-lora", action="store_true")
    a("--max-loras", type=int, default=1)
    a("--max-lora-rank", type=int, default=16)
    a("--lora-load-s", type=float, default=None,
      help="seconds to load an adapter that is not in a GPU slot (default: rank-sized adapter at 2 GB/s)")
    a("--lora-modules", nargs="+", default=[], help="name=path or JSON {name, path}")
    a("--enable-prompt-tokens-details", action="store_true", help="accepted; details are always reported")
    a("--kv-transfer-config", default=None,
      help="vLLM's JSON: OffloadingConnector (cpu_bytes_to_use, TieringOffloadingSpec fs tier) adds tiers; "
           "NixlConnector (P/D) is accepted")
    a("--kv-offloading-backend", default=None, choices=["native", "lmcache"], help="vLLM's shortcut (native)")
    a("--kv-offloading-size", type=float, default=None, help="CPU offload size in GiB (vLLM's shortcut)")
    a("--num-cpu-blocks", type=int, default=None, help="CPU tier size in GPU blocks (overrides vLLM's flags)")
    a("--num-storage-blocks", type=int, default=None, help="shared-storage tier size in GPU blocks")
    a("--cpu-bandwidth-gbps", type=float, default=25.0, help="CPU<->GPU copy bandwidth, GB/s (1e9 bytes/s)")
    a("--storage-bandwidth-gbps", type=float, default=2.0, help="storage->GPU read bandwidth, GB/s")
    a("--dtype", default="auto", help="accepted, ignored")
    a("--enforce-eager", action="store_true", help="accepted, ignored")
    a("--role", default="both", choices=["prefill", "decode", "both"],
      help="P/D role: prefill/both hold a do_remote_decode request's KV for a decoder to pull; decode holds none")
    a("--kv-link", default="rdma", choices=["nvlink", "rdma", "tcp"],
      help="P/D link to prefill replicas: sets the transfer bandwidth and setup time (sim/kv_link.py)")
    a("--kv-link-bandwidth-gbps", type=float, default=None, help="override the link's bandwidth (GB/s)")
    a("--kv-link-setup-ms", type=float, default=None, help="override the link's per-transfer setup (ms)")
    a("--kv-transfer-failure-rate", type=float, default=0.0,
      help="fraction of P/D KV pulls that fail (the request then prefills locally; counted)")
    a("--kv-lease-ttl-s", type=float, default=480.0,
      help="how long a prefill replica holds KV for a decoder that never pulls it")
    a("--failure-rate", type=float, default=0.0)
    a("--failure-types", default="http_500")
    a("--startup-delay", type=float, default=0.0, metavar="S",
      help="seconds before the server listens (a model-load stand-in: exercises cold starts and scale-from-zero)")
    a("--log-level", default="WARNING")


def _json_flag(name: str, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FlagError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise FlagError(f"{name} must be a JSON object")
    return value


def _lora_modules(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        if item.startswith("{"):
            obj = _json_flag("--lora-modules", item) or {}
            name, path = obj.get("name"), obj.get("path")
        else:
            name, _, path = item.partition("=")
        if not name or not path:
            raise FlagError(f"--lora-modules entry {item!r} must be name=path")
        out.append((str(name), str(path)))
    return out


def hash_seed(seed: int) -> int:
    """Block-hash seed: ``PYTHONHASHSEED`` when set to a number (as vLLM seeds its hashes), else ``--seed``.

    Replicas that share a storage tier must hash alike, so they are started with one PYTHONHASHSEED;
    the launcher gives each replica its own ``--seed``."""
    env = os.environ.get("PYTHONHASHSEED", "")
    return int(env) if env.isdigit() else seed


def _lora_load_s(args: argparse.Namespace, profile: Any) -> float:
    """``--lora-load-s``, else the load time of a ``--max-lora-rank`` adapter of the profile's shape."""
    from lanterna.sim.lora_slots import profile_load_s

    if args.lora_load_s is not None:
        if args.lora_load_s < 0:
            raise FlagError(f"--lora-load-s must be >= 0, got {args.lora_load_s}")
        return float(args.lora_load_s)
    return profile_load_s(profile, args.max_lora_rank)


def build(args: argparse.Namespace) -> Any:
    """Validate flags and assemble a ``SimServer`` (raises FlagError with a one-line reason)."""
    from lanterna.cli.sim_tiers import TierFlagError, TierFlags, resolve_tiers
    from lanterna.models.tokenizer import load_tokenizer
    from lanterna.protocol.kv_events import topic_for
    from lanterna.sim.engine import Engine, EngineConfig
    from lanterna.sim.failures import FailureInjector, parse_failure_types
    from lanterna.sim.kv_link import KVLeases, make_link
    from lanterna.sim.lora import LoraRegistry
    from lanterna.sim.metrics import CacheConfig, SimMetrics
    from lanterna.sim.pd import SimPD
    from lanterna.sim.profiles import get_profile
    from lanterna.sim.publisher import KVEventPublisher, PublisherConfig
    from lanterna.sim.server import SimServer, SimSettings
    from lanterna.sim.timing import make_timer

    for flag in ("port", "block_size", "max_num_seqs", "max_num_batched_tokens", "max_model_len", "max_loras"):
        if getattr(args, flag) <= 0 and not (flag == "port" and args.port == 0):
            raise FlagError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.time_scale < 0:
        raise FlagError(f"--time-scale must be >= 0, got {args.time_scale}")
    try:
        profile = get_profile(args.profile)
        timer = make_timer(args.timing, args.profile)
        failures = FailureInjector(args.failure_rate, parse_failure_types(args.failure_types), seed=args.seed)
        tok = load_tokenizer(args.tokenizer)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise FlagError(str(exc)) from None
    flags = TierFlags(_json_flag("--kv-transfer-config", args.kv_transfer_config), args.kv_offloading_backend,
                      args.kv_offloading_size, args.num_cpu_blocks, args.num_storage_blocks, args.cpu_bandwidth_gbps,
                      args.storage_bandwidth_gbps)
    try:
        tiers = resolve_tiers(flags, block_size=args.block_size, kv_bytes_per_token=profile.kv_bytes_per_token,
                              tp=profile.tp)
    except TierFlagError as exc:
        raise FlagError(str(exc)) from None
    storage = None
    if tiers.storage_root is not None:
        from lanterna.sim.shared_dir import DirectoryTier, namespace_for

        try:
            storage = DirectoryTier(tiers.storage_root, namespace_for(args.model, args.block_size, profile.tp),
                                    tiers.num_storage_blocks)
            storage.base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FlagError(f"--kv-transfer-config fs root_dir {tiers.storage_root}: {exc.strerror or exc}") from None
    kv_cfg = _json_flag("--kv-events-config", args.kv_events_config) or {}
    names = args.served_model_name or [args.model]
    num_blocks = args.num_gpu_blocks_override or profile.num_gpu_blocks(args.block_size, args.gpu_memory_utilization)
    if num_blocks <= 0:
        raise FlagError(f"profile {args.profile} leaves no memory for KV blocks")
    vocab = max(tok.vocab_size, 1)
    engine = Engine(EngineConfig(block_size=args.block_size, num_gpu_blocks=num_blocks,
                                 max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                                 max_model_len=args.max_model_len, enable_prefix_caching=args.enable_prefix_caching,
                                 vocab_size=vocab, hash_seed=hash_seed(args.seed), num_cpu_blocks=tiers.num_cpu_blocks,
                                 num_storage_blocks=tiers.num_storage_blocks,
                                 kv_bytes_per_token=profile.kv_bytes_per_token,
                                 cpu_bandwidth_bps=tiers.cpu_bandwidth_bps,
                                 storage_bandwidth_bps=tiers.storage_bandwidth_bps,
                                 max_loras=args.max_loras if args.enable_lora else 0,
                                 lora_load_s=_lora_load_s(args, profile)), timer, seed=args.seed,
                    storage=storage)
    lora = LoraRegistry(enabled=args.enable_lora, max_loras=args.max_loras)
    for name, path in _lora_modules(args.lora_modules):
        lora.load(name, path)
    metrics = SimMetrics(names[0], CacheConfig(args.block_size, num_blocks, tiers.num_cpu_blocks or None,
                                               args.enable_prefix_caching, args.num_gpu_blocks_override,
                                               args.gpu_memory_utilization, args.kv_offloading_size),
                         max_loras=args.max_loras if args.enable_lora else None)
    publisher = None
    if kv_cfg.get("enable_kv_cache_events") and kv_cfg.get("publisher", "zmq") == "zmq":
        pcfg = PublisherConfig(endpoint=str(kv_cfg.get("endpoint", "tcp://*:5557")),
                               topic=str(kv_cfg.get("topic") or topic_for(f"{args.host}:{args.port}", names[0])),
                               replay_endpoint=kv_cfg.get("replay_endpoint"),
                               buffer_steps=int(kv_cfg.get("buffer_steps", 10000)),
                               hwm=int(kv_cfg.get("hwm", 100000)), encoding=args.kv_event_encoding)
        try:
            publisher = KVEventPublisher(pcfg)
        except Exception as exc:  # zmq.ZMQError: address in use, bad endpoint
            raise FlagError(f"--kv-events-config endpoint: {exc}") from None
    settings = SimSettings(served_model_names=names, model_root=args.model, host=args.host, port=args.port,
                           max_model_len=args.max_model_len, vocab_size=vocab, time_scale=args.time_scale,
                           role=args.role, engine_id=f"sim-{args.host}:{args.port}")
    try:
        link = make_link(args.kv_link, args.kv_link_bandwidth_gbps * 1e9 if args.kv_link_bandwidth_gbps else None,
                         args.kv_link_setup_ms / 1e3 if args.kv_link_setup_ms is not None else None)
        pd = SimPD(args.role, link, KVLeases(num_blocks, args.kv_lease_ttl_s), metrics.registry,
                   failure_rate=args.kv_transfer_failure_rate, seed=args.seed)
    except ValueError as exc:
        raise FlagError(str(exc)) from None
    return SimServer(settings, engine, tok, metrics, publisher, lora, failures, pd=pd)


async def _serve(srv: Any, host: str, port: int, startup_delay_s: float = 0.0) -> None:
    from aiohttp import web

    if startup_delay_s > 0:
        await asyncio.sleep(startup_delay_s)  # "loading weights": /health answers nothing until it passes
    runner = web.AppRunner(srv.build_app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=2048).start()
        log.warning("sim_ready", extra={"host": host, "port": port})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _run_loop(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        srv = build(args)
    except FlagError as exc:
        print(f"lanterna sim: error: {exc}", file=sys.stderr)
        return 2
    try:
        _run_loop(_serve(srv, args.host, args.port, max(0.0, args.startup_delay)))
    except OSError as exc:
        print(f"lanterna sim: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
