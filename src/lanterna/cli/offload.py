"""``lanterna offload``: vLLM offload flags from a short description, and the shared-filesystem evictor.

  lanterna offload vllm-args --cpu-gib 100                          # CPU tier
  lanterna offload vllm-args --cpu-gib 100 --fs-path /mnt/kv --json # CPU + shared filesystem
  lanterna offload vllm-args --config tiers.yaml --helm             # same keys in YAML
  lanterna offload evict --root /mnt/kv --high 0.85 --low 0.70 --interval 30 --metrics-port 9400
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from lanterna.offload.vllm_args import DEFAULT_FS_THREADS, DEFAULT_HASH_SEED, GIB


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="offload_command", metavar="WHAT", required=True)
    va = sub.add_parser("vllm-args", help="emit vLLM's --kv-transfer-config and environment for offload tiers",
                        description=__doc__, formatter_class=parser.formatter_class)
    va.add_argument("--cpu-gib", type=float, help="CPU tier size in GiB (total over TP ranks, as vLLM counts)")
    va.add_argument("--fs-path", help="shared-filesystem tier root (adds TieringOffloadingSpec)")
    va.add_argument("--block-size", type=int, help="tokens per offloaded block (a multiple of vLLM's "
                    "--block-size); default: vLLM's GPU block size, or 256 with --fs-path")
    va.add_argument("--fs-threads", type=int, help=f"fs read and write threads each (default {DEFAULT_FS_THREADS})")
    va.add_argument("--fs-kv-events", action="store_true", help="fs tier emits BlockStored (medium STORAGE)")
    va.add_argument("--hash-seed", help=f"PYTHONHASHSEED shared by all pods (default {DEFAULT_HASH_SEED})")
    va.add_argument("--config", type=Path, help="YAML with keys cpu_gib, fs_path, block_size, fs_threads, "
                    "fs_kv_events, hash_seed (flags given on the command line win)")
    fmt = va.add_mutually_exclusive_group()
    for name, text in (("json", "flags, env and the config object as JSON"),
                       ("shell", "bash: export lines + a VLLM_OFFLOAD_ARGS array (the default)"),
                       ("helm", "a container-spec fragment: args + env")):
        fmt.add_argument(f"--{name}", dest="format", action="store_const", const=name, help=text)

    ev = sub.add_parser("evict", help="delete least-recently-read block files between disk-usage watermarks",
                        formatter_class=parser.formatter_class)
    ev.add_argument("--root", required=True, help="the shared KV directory (vLLM's fs root_dir)")
    ev.add_argument("--high", type=float, default=0.85, help="start evicting at this usage")
    ev.add_argument("--low", type=float, default=0.70, help="evict down to this usage")
    ev.add_argument("--capacity-bytes", type=int, help="treat the bytes under --root against this capacity "
                    "instead of the filesystem's statvfs (quota-less dirs, tests)")
    ev.add_argument("--dry-run", action="store_true", help="report what would be deleted; delete nothing")
    ev.add_argument("--interval", type=float, help="seconds between passes; without it, run one pass and exit")
    ev.add_argument("--max-candidates", type=int, default=100_000, help="oldest files kept per scan (memory bound)")
    ev.add_argument("--recency", choices=("auto", "atime", "mtime"), default="auto",
                    help="auto: mtime on noatime mounts, else atime")
    ev.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    ev.add_argument("--kv-events-endpoint", help="publish BlockRemoved on this ZMQ PUB endpoint (tcp://*:5560)")
    ev.add_argument("--kv-events-topic", default="kv@evictor@", help="topic for those events")
    ev.add_argument("--medium", default="STORAGE", help="medium of the removals (vLLM's fs tier: STORAGE)")
    ev.add_argument("--log-format", choices=("json", "text"), default="json")


def run(args: argparse.Namespace) -> int:
    if args.offload_command == "vllm-args":
        return _vllm_args(args)
    return _evict(args)


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping")
    unknown = set(doc) - {"cpu_gib", "fs_path", "block_size", "fs_threads", "fs_kv_events", "hash_seed"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    return doc


def _vllm_args(args: argparse.Namespace) -> int:
    from lanterna.offload.vllm_args import FsTier, OffloadArgsError, OffloadSpec, vllm_offload_args

    try:
        doc = _load_yaml(args.config) if args.config else {}
        opts = {k: v for k, v in doc.items()}
        for key in ("cpu_gib", "fs_path", "block_size", "fs_threads", "hash_seed"):
            if getattr(args, key) is not None:
                opts[key] = getattr(args, key)
        if args.fs_kv_events:
            opts["fs_kv_events"] = True
        if opts.get("cpu_gib") is None:
            raise OffloadArgsError("--cpu-gib (or cpu_gib in --config) is required")
        threads = int(opts.get("fs_threads") or DEFAULT_FS_THREADS)
        fs = (FsTier(str(opts["fs_path"]), threads, threads, bool(opts.get("fs_kv_events")))
              if opts.get("fs_path") else None)
        spec = OffloadSpec(int(float(opts["cpu_gib"]) * GIB), fs, opts.get("block_size"),
                           str(opts.get("hash_seed") or DEFAULT_HASH_SEED))
        out = vllm_offload_args(spec)
    except (OffloadArgsError, ValueError, OSError) as exc:
        print(f"lanterna offload vllm-args: error: {exc}", file=sys.stderr)
        return 2
    fmt = args.format or "shell"
    sys.stdout.write(out.json() if fmt == "json" else out.helm() if fmt == "helm" else out.shell())
    return 0


def _evict(args: argparse.Namespace) -> int:
    from lanterna.obs.logs import setup_logging
    from lanterna.offload.evict_metrics import EvictorMetrics
    from lanterna.offload.evict_policy import Watermarks
    from lanterna.offload.evictor import Evictor, EvictorConfig, detect_recency
    from lanterna.offload.layout import BlockName

    setup_logging(args.log_format)
    try:
        wm = Watermarks(args.high, args.low)
    except ValueError as exc:
        print(f"lanterna offload evict: error: {exc}", file=sys.stderr)
        return 2
    if not Path(args.root).is_dir():
        print(f"lanterna offload evict: error: {args.root} is not a directory", file=sys.stderr)
        return 2
    recency = detect_recency(args.root) if args.recency == "auto" else args.recency
    cfg = EvictorConfig(args.root, wm, args.capacity_bytes, args.dry_run, args.max_candidates, recency=recency)
    metrics = EvictorMetrics()
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, registry=metrics.registry)
    publisher = None
    if args.kv_events_endpoint:
        from lanterna.offload.events import StorageEventPublisher

        publisher = StorageEventPublisher(args.kv_events_endpoint, args.kv_events_topic, args.medium)

    def on_removed(names: list[BlockName]) -> None:
        assert publisher is not None
        by_group: dict[int, list[int | bytes]] = {}
        for n in names:
            by_group.setdefault(n.group_idx, []).append(n.event_hash)
        for group, hashes in by_group.items():
            publisher.removed(hashes, group)

    evictor = Evictor(cfg, on_removed=on_removed if publisher else None, on_pass=metrics.observe)
    try:
        if args.interval is None:
            res = evictor.run_once()
            print(f"{'would delete' if args.dry_run else 'deleted'} {res.files_deleted} files, "
                  f"{res.bytes_deleted} bytes; usage {res.used_bytes}/{res.capacity_bytes} bytes; "
                  f"scanned {res.files_scanned} in {res.scan_s:.2f}s")
            return 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        evictor.run_forever(args.interval, stop)
        return 0
    finally:
        if publisher is not None:
            publisher.close()
