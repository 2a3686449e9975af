"""KV block transfer and file-tier bandwidth, each as a share of the limit measured in the same run.

    PYTHONPATH=src .venv-vllm/bin/python benchmarks/kv_transfer.py [--total-mib 256] [--dir /mnt/kv] [--json out.json]

Rows (GB/s = 1e9 bytes/s, best of --repeat):
- limits: ``memcpy`` (one large contiguous host copy); on CUDA ``pcie_h2d``/``pcie_d2h`` (one large contiguous
  pinned copy); ``disk_write`` (sequential write + fsync, O_DIRECT when the filesystem allows) and
  ``disk_read`` (sequential read, O_DIRECT, else after dropping the file's page cache);
- ``to_host``/``to_device``: ``BlockTransfer`` moving randomly scattered blocks of 16 KiB-2 MiB (to scattered
  host slots: the gather/scatter path, and to one contiguous host run: the direct-DMA path), vs pcie
  (CUDA) or memcpy (CPU);
- ``file_write``/``file_read``: ``FileTier`` storing/loading one file per block (write timed through a final
  ``os.sync``; read after dropping the page cache), vs disk_write / disk_read.
The transfer rows need torch (the ``[torch]`` extra, or the vLLM venv); without it only file rows run.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lanterna.offload.file_tier import FileTier  # noqa: E402
from lanterna.offload.layout import StorageLayout  # noqa: E402

KIB, MIB = 1 << 10, 1 << 20
SIZES = (16 * KIB, 64 * KIB, 256 * KIB, 1 * MIB, 2 * MIB)


def best(fn: Callable[[], None], nbytes: int, repeat: int, sync: Callable[[], None] = lambda: None) -> float:
    """Best GB/s of ``repeat`` runs."""
    out = 0.0
    for _ in range(repeat):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        out = max(out, nbytes / (time.perf_counter() - t) / 1e9)
    return out


def row(rows: list[dict[str, object]], name: str, block: int | None, gbps: float, limit: str | None,
        limits: dict[str, float]) -> None:
    share = gbps / limits[limit] if limit else None
    rows.append({"row": name, "block_bytes": block, "gbps": round(gbps, 2), "limit": limit,
                 "share": round(share, 3) if share is not None else None})
    size = f"{block // KIB:>5} KiB" if block else " " * 9
    pct = f"{share:6.1%} of {limit}" if share is not None else ""
    print(f"{name:<28}{size}  {gbps:8.2f} GB/s  {pct}", flush=True)


# -- raw disk ------------------------------------------------------------------------------------
def _aligned(nbytes: int) -> mmap.mmap:
    buf = mmap.mmap(-1, nbytes)  # page-aligned, as O_DIRECT needs
    buf.write(os.urandom(MIB) * (nbytes // MIB))
    return buf


def _drop_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def disk_limits(d: str, nbytes: int, repeat: int) -> tuple[float, float, bool]:
    path = os.path.join(d, "raw.bin")
    buf = _aligned(nbytes)
    direct = getattr(os, "O_DIRECT", 0)
    try:  # probe O_DIRECT (tmpfs and some overlay filesystems refuse it)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | direct, 0o644))
    except OSError:
        direct = 0

    def write() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | direct, 0o644)
        try:
            for off in range(0, nbytes, 8 * MIB):
                os.write(fd, memoryview(buf)[off:off + 8 * MIB])
            os.fsync(fd)
        finally:
            os.close(fd)

    def read() -> None:
        if not direct:
            _drop_cache(path)
        fd = os.open(path, os.O_RDONLY | direct)
        try:
            for off in range(0, nbytes, 8 * MIB):
                os.readv(fd, [memoryview(buf)[off:off + 8 * MIB]])
        finally:
            os.close(fd)

    w = best(write, nbytes, repeat)
    r = best(read, nbytes, repeat)
    os.unlink(path)
    return w, r, bool(direct)


def file_rows(rows: list[dict[str, object]], limits: dict[str, float], d: str, total: int, repeat: int) -> None:
    for bs in SIZES:
        n = max(4, total // bs)
        pool = np.random.default_rng(0).integers(0, 255, (n, bs), dtype=np.uint8)
        blocks = [[memoryview(pool[i])] for i in range(n)]
        root = tempfile.mkdtemp(dir=d)
        tier = FileTier(StorageLayout(root, "bench", 16, "uint8"), threads=16)
        hashes = [i.to_bytes(32, "big") for i in range(n)]
        w = 0.0
        for _ in range(repeat):
            shutil.rmtree(root)
            os.makedirs(root)
            t = time.perf_counter()
            tier.store(hashes, blocks)
            os.sync()
            w = max(w, n * bs / (time.perf_counter() - t) / 1e9)
        paths = [tier.layout.block_path(h) for h in hashes]

        r = 0.0
        for _ in range(repeat):
            for p in paths:
                _drop_cache(p)
            t = time.perf_counter()
            assert all(tier.load(hashes, blocks))
            r = max(r, n * bs / (time.perf_counter() - t) / 1e9)
        tier.close()
        shutil.rmtree(root)
        row(rows, "file_write", bs, w, "disk_write", limits)
        row(rows, "file_read", bs, r, "disk_read", limits)


# -- transfers -----------------------------------------------------------------------------------
def transfer_rows(rows: list[dict[str, object]], limits: dict[str, float], total: int, repeat: int) -> str:
    import torch

    from lanterna.offload.transfer import BlockTransfer, host_pool

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    big = torch.empty(total, dtype=torch.uint8, device=dev)
    host = torch.empty(total, dtype=torch.uint8, pin_memory=cuda)
    host2 = torch.empty(total, dtype=torch.uint8, pin_memory=cuda)
    limits["memcpy"] = best(lambda: host2.copy_(host), total, repeat)
    row(rows, "limit memcpy", None, limits["memcpy"], None, limits)
    if cuda:
        limits["pcie_h2d"] = best(lambda: big.copy_(host, non_blocking=True), total, repeat, sync)
        limits["pcie_d2h"] = best(lambda: host.copy_(big, non_blocking=True), total, repeat, sync)
        row(rows, "limit pcie_h2d", None, limits["pcie_h2d"], None, limits)
        row(rows, "limit pcie_d2h", None, limits["pcie_d2h"], None, limits)
    g = torch.Generator().manual_seed(0)
    for bs in SIZES:
        n = max(8, total // bs)
        dev_cache = torch.randint(0, 255, (2 * n, bs), dtype=torch.uint8, generator=g).to(dev)
        pool = host_pool(dev_cache, 2 * n)
        bt = BlockTransfer([(dev_cache, pool)], max_blocks=max(8, min(n, (64 * MIB) // bs)))
        d_ids = torch.randperm(2 * n, generator=g)[:n]
        scattered = torch.randperm(2 * n, generator=g)[:n]
        run = torch.arange(n // 2, n // 2 + n)
        for label, h_ids in (("scattered", scattered), ("contiguous", run)):
            up = best(lambda b=bt, d=d_ids, h=h_ids: b.to_host(d, h).wait(), n * bs, repeat, sync)
            down = best(lambda b=bt, d=d_ids, h=h_ids: b.to_device(h, d).wait(), n * bs, repeat, sync)
            row(rows, f"to_host {label}", bs, up, "pcie_d2h" if cuda else "memcpy", limits)
            row(rows, f"to_device {label}", bs, down, "pcie_h2d" if cuda else "memcpy", limits)
    return torch.cuda.get_device_name() if cuda else f"CPU only (torch {torch.__version__}, no CUDA)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--total-mib", type=int, default=256, help="bytes moved per row")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="filesystem for the file tier (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--skip-files", action="store_true")
    args = ap.parse_args()
    total = args.total_mib * MIB
    rows: list[dict[str, object]] = []
    limits: dict[str, float] = {}
    print(f"host: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    try:
        device = transfer_rows(rows, limits, total, args.repeat)
    except ImportError:
        device = "no torch: transfer rows skipped"
    print(f"device: {device}", flush=True)
    if not args.skip_files:
        d = tempfile.mkdtemp(dir=args.dir, prefix="kv-bench-")
        try:
            w, r, direct = disk_limits(d, total, args.repeat)
            limits["disk_write"], limits["disk_read"] = w, r
            note = "O_DIRECT" if direct else "buffered+fsync, cache dropped"
            row(rows, f"limit disk_write ({note})", None, w, None, limits)
            row(rows, "limit disk_read", None, r, None, limits)
            file_rows(rows, limits, d, total, args.repeat)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"device": device, "limits": limits, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
