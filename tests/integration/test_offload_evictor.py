"""The evictor under concurrent writer and reader processes, as a real CLI process (metrics, KV events),
and a bounded scan of 200k files."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path

import msgpack
import pytest
import zmq

from lanterna.offload.evict_policy import Watermarks
from lanterna.offload.evictor import Evictor, EvictorConfig
from lanterna.offload.layout import StorageLayout, parse_block_file
from tests.conftest import free_port

pytestmark = pytest.mark.integration

FILE_SIZE = 4096
CAPACITY = 512 * FILE_SIZE
FILES_PER_WRITER = 600
NUM_WRITERS = 2
HIGH, LOW = 0.85, 0.70


def block_hash(writer: int, i: int) -> bytes:
    return hashlib.sha256(f"{writer}-{i}".encode()).digest()


def content(h: bytes) -> bytes:
    return (h * (FILE_SIZE // len(h) + 1))[:FILE_SIZE]


def writer(root: str, wid: int, errors: Synchronized[int]) -> None:
    """vLLM's store protocol: write a temp name in several chunks, then ``os.replace``."""
    lay = StorageLayout(root, "m", 256, "float16")
    for i in range(FILES_PER_WRITER):
        h = block_hash(wid, i)
        path = lay.block_path(h)
        data = content(h)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}_{random.getrandbits(63)}.tmp"
            with open(tmp, "wb") as f:
                for off in range(0, FILE_SIZE, 1024):
                    f.write(data[off:off + 1024])
                    f.flush()
            os.replace(tmp, path)
        except OSError:
            with errors.get_lock():
                errors.value += 1


def reader(root: str, stop: Event, ok: Synchronized[int], bad: Synchronized[int]) -> None:
    """Reads whole block files (in two halves, so deletes land mid-read) and checks every byte."""
    rng = random.Random(os.getpid())
    while not stop.is_set():
        paths = [os.path.join(d, n) for d, _, names in os.walk(root) for n in names if n.endswith(".bin")]
        for p in rng.sample(paths, min(20, len(paths))):
            try:
                with open(p, "rb") as f:
                    data = f.read(FILE_SIZE // 2)
                    data += f.read()
            except FileNotFoundError:
                continue  # evicted: a miss, which is fine
            name = parse_block_file(os.path.basename(p))
            counter = ok if name is not None and data == content(name.block_hash) else bad
            with counter.get_lock():
                counter.value += 1


def _used(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {k: float(v) for k, _, v in (ln.rpartition(" ") for ln in text.splitlines())
            if k and not k.startswith("#")}


@pytest.fixture
def evict_daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int, Path]]:
    root = tmp_path / "kv"
    root.mkdir()
    mport, eport = free_port(), free_port()
    cmd = [sys.executable, "-m", "lanterna.cli.main", "offload", "evict", "--root", str(root), "--high", str(HIGH),
           "--low", str(LOW), "--capacity-bytes", str(CAPACITY), "--interval", "0.05", "--recency", "atime",
           "--metrics-port", str(mport), "--kv-events-endpoint", f"tcp://*:{eport}", "--log-format", "text"]
    log = open(tmp_path / "evict.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": "src"})
    try:
        deadline = time.monotonic() + 30
        while True:  # readiness: the metrics endpoint answers (no event to await from another process)
            assert proc.poll() is None, (tmp_path / "evict.log").read_text()
            try:
                _metrics(mport)
                break
            except OSError:
                assert time.monotonic() < deadline, "evictor metrics never came up"
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.1)
        yield proc, mport, eport, root
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
        log.close()


def test_concurrent_writers_readers_and_evictor(evict_daemon: tuple[subprocess.Popen[bytes], int, int, Path]) -> None:
    proc, mport, eport, root = evict_daemon
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{eport}")
    ctx = mp.get_context("spawn")
    errors, ok, bad = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0)
    stop = ctx.Event()
    readers = [ctx.Process(target=reader, args=(str(root), stop, ok, bad)) for _ in range(2)]
    writers = [ctx.Process(target=writer, args=(str(root), w, errors)) for w in range(NUM_WRITERS)]
    for p in readers + writers:
        p.start()
    for p in writers:
        p.join(timeout=120)
        assert p.exitcode == 0
    stop.set()
    for p in readers:
        p.join(timeout=30)
        assert p.exitcode == 0
    m = _metrics(mport)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0

    assert errors.value == 0  # no writer lost its temp file to the evictor
    assert bad.value == 0 and ok.value > 0  # no reader ever saw a partial or foreign file
    assert m["lanterna_offload_evict_files_deleted_total"] > 0
    assert m["lanterna_offload_evict_passes_total"] > 0
    assert not list(root.rglob("*.tmp"))

    # a final pass leaves usage between the watermarks (within one file below low)
    Evictor(EvictorConfig(str(root), Watermarks(HIGH, LOW), CAPACITY, recency="atime")).run_once()
    used = _used(root)
    assert LOW * CAPACITY - FILE_SIZE < used < HIGH * CAPACITY, used

    # removals arrived as vLLM-format BlockRemoved (medium STORAGE) for blocks we wrote that are gone now
    written = {int.from_bytes(block_hash(w, i)[-8:], "big")
               for w in range(NUM_WRITERS) for i in range(FILES_PER_WRITER)}
    on_disk = {n.event_hash for p in root.rglob("*.bin") if (n := parse_block_file(p.name)) is not None}
    removed: list[int] = []
    while sub.poll(1000):
        topic, seq, payload = sub.recv_multipart()
        assert topic == b"kv@evictor@" and len(seq) == 8
        _ts, events, _rank = msgpack.unpackb(payload)
        for ev in events:
            assert ev["type"] == "BlockRemoved" and ev["medium"] == "STORAGE"
            removed += ev["block_hashes"]
    sub.close()
    assert removed and set(removed) <= written and not set(removed) & on_disk


def test_cli_dry_run_deletes_nothing(tmp_path: Path) -> None:
    lay = StorageLayout(str(tmp_path), "m", 256, "float16")
    for i in range(10):
        p = Path(lay.block_path(i.to_bytes(32, "big")))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 100)
    out = subprocess.run([sys.executable, "-m", "lanterna.cli.main", "offload", "evict", "--root", str(tmp_path),
                          "--capacity-bytes", "1000", "--dry-run"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": "src"}, timeout=60, check=True)
    assert "would delete 3 files, 300 bytes" in out.stdout
    assert len(list(tmp_path.rglob("*.bin"))) == 10


# Peak Python heap of one scan (tracemalloc: exact and immune to what else runs on the machine, where a
# process's RSS high-water mark is not).
MEM_PROBE = """
import sys, tracemalloc
from lanterna.offload.evict_policy import Watermarks
from lanterna.offload.evictor import Evictor, EvictorConfig
root, n = sys.argv[1], int(sys.argv[2])
for k in (2000, n):
    tracemalloc.start()
    res = Evictor(EvictorConfig(root, Watermarks(0.99, 0.985), capacity_bytes=n + 100, max_candidates=k,
                                dry_run=True)).run_once()
    peak = tracemalloc.get_traced_memory()[1] // 1024
    tracemalloc.stop()
    print(k, res.files_scanned, res.max_retained, res.files_deleted, peak, flush=True)
"""


def test_scan_of_many_files_keeps_memory_bounded(tmp_path: Path) -> None:
    """100k block files, k = 2,000: the scan's peak heap stays around k entries, while keeping every file
    (k = n, the control) costs tens of MB. tmpfs when present (file creation is 10x faster)."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else tmp_path
    root = base / f"lanterna-evict-{os.getpid()}-{time.monotonic_ns()}"
    n = 100_000
    try:
        for d in range(256):
            (root / f"{d:02x}_g0").mkdir(parents=True)
        for i in range(n):
            fd = os.open(f"{root}/{i & 255:02x}_g0/{i:064x}.bin", os.O_CREAT | os.O_WRONLY, 0o644)
            os.write(fd, b"x")
            os.close(fd)
        out = subprocess.run([sys.executable, "-c", MEM_PROBE, str(root), str(n)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": "src"}, timeout=240, check=True).stdout
        (k1, scanned1, kept1, would1, grew1_kib), (_, _, kept2, would2, grew2_kib) = (
            [int(x) for x in line.split()] for line in out.splitlines())
        assert scanned1 == n and kept1 == k1 == 2000 and kept2 == n
        need = n - int(0.985 * (n + 100))
        assert (would1, would2) == (min(k1, need), need)  # dry-run: one round, at most k victims
        assert grew1_kib < 4 * 1024, out  # bounded: the k-entry heap and one directory listing at a time
        assert grew2_kib > grew1_kib + 10 * 1024, out  # the control: holding every entry costs 10+ MiB
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)
