"""``--workers N``: N gateway processes on one port (SO_REUSEPORT), supervised by the parent.

The kernel spreads *connections* over the workers' listening sockets. Each worker is a whole gateway: its own
scheduler, KV index (it subscribes to every endpoint's KV-event publisher, as active-active gateways do),
load accounting, flow control, breakers and ``/metrics``. So in-flight load, queue limits and
``max_concurrency`` are per worker, not per port, and a ``/metrics`` scrape reads the one worker its
connection landed on (``x-lanterna-worker`` on every response names its pid).

The parent binds nothing and serves nothing. It writes the effective config to a file, starts each worker as
``python -m lanterna.cli.workers CONFIG READY_FD`` and watches one pipe per worker: the worker writes
``ready`` once it listens, and end-of-file means it exited (however it died). A worker that exits before
the first full start is a start-up error (bad config, port taken): every worker stops and the parent exits 2.
Later a crashed worker is restarted after a back-off (0.5 s doubling to 30 s; reset once it stayed up 30 s).
SIGTERM/SIGINT to the parent are forwarded; workers get SIGKILL after a grace period; each worker also gets
SIGTERM if the parent dies (Linux ``PR_SET_PDEATHSIG``), so none is orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from lanterna.config.model import LanternaConfig
from lanterna.errors import ConfigError
from lanterna.gateway.server import RESPONSE_HEADERS

log = logging.getLogger(__name__)

WORKER_HEADER = "x-lanterna-worker"
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_S = 30.0  # a worker up this long restarts from the shortest back-off again
GRACE_S = 10.0  # SIGTERM -> SIGKILL


def tag_responses(app: web.Application) -> None:
    """Every response names the worker that served it (one header insert per response)."""
    pid = str(os.getpid())

    async def _tag(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers[WORKER_HEADER] = pid

    app.on_response_prepare.append(_tag)
    app[RESPONSE_HEADERS] = {WORKER_HEADER: pid}  # the lean front's routes


def check_port_free(host: str, port: int) -> None:
    """Fail fast (one line) when something already listens there: with SO_REUSEPORT the workers would
    otherwise share the port with another SO_REUSEPORT listener, or restart forever against one without."""
    if port == 0:
        raise ConfigError("--workers > 1 needs a fixed port (gateway.port is 0)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _die_with_parent() -> None:
    """Child side, before exec (Linux): SIGTERM when the parent dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass(slots=True)
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    exited: asyncio.Future[int]


class Supervisor:
    """Starts, watches, restarts and stops the workers (one slot task each)."""

    def __init__(self, config_path: Path, n: int) -> None:
        self.config_path = config_path
        self.n = n
        self.stopping = asyncio.Event()
        self.workers: dict[int, _Worker] = {}
        self.first_ready = [asyncio.Event() for _ in range(n)]  # set when slot i's worker first listens
        self.failed: str | None = None  # a start-up failure: the whole group stops, exit 2

    def _spawn(self, index: int) -> _Worker:
        loop = asyncio.get_running_loop()
        rfd, wfd = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lanterna.cli.workers", str(self.config_path), str(wfd)],
                pass_fds=(wfd,), stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
            )
        finally:
            os.close(wfd)
        w = _Worker(index, proc, time.monotonic(), loop.create_future())
        buf = bytearray()

        def readable() -> None:
            try:
                chunk = os.read(rfd, 64)
            except OSError:
                chunk = b""
            if chunk:
                buf.extend(chunk)
                if b"ready" in buf:
                    self.first_ready[index].set()
                return
            loop.remove_reader(rfd)
            os.close(rfd)
            # EOF: the worker's fds are closed, so it has exited (or is exiting); reap it off the loop.
            def reaped(f: asyncio.Future[int]) -> None:
                if not w.exited.done():
                    w.exited.set_result(f.result())

            asyncio.ensure_future(asyncio.to_thread(proc.wait)).add_done_callback(reaped)

        loop.add_reader(rfd, readable)
        self.workers[index] = w
        return w

    async def _slot(self, index: int, started_all: asyncio.Event) -> None:
        delay = BACKOFF_MIN_S
        while not self.stopping.is_set():
            w = self._spawn(index)
            rc = await w.exited
            if self.stopping.is_set():
                return
            up_s = time.monotonic() - w.started
            if not started_all.is_set():
                self.failed = f"gateway worker {index} exited with {rc} during start-up"
                self.stopping.set()
                return
            if up_s >= STABLE_S:
                delay = BACKOFF_MIN_S
            log.warning("gateway_worker_exited", extra={"worker": index, "pid": w.proc.pid, "returncode": rc,
                                                        "uptime_s": round(up_s, 3), "restart_in_s": delay})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def run(self, on_ready: Callable[[], None] | None = None) -> int:
        """Until SIGTERM/SIGINT (forwarded) or a start-up failure; 0 on a clean stop, 2 on a failure."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        started_all = asyncio.Event()
        slots = [asyncio.create_task(self._slot(i, started_all)) for i in range(self.n)]
        try:
            readiness = asyncio.gather(*(e.wait() for e in self.first_ready))
            stop_wait = asyncio.ensure_future(self.stopping.wait())
            waiters: list[asyncio.Future[Any]] = [readiness, stop_wait]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if readiness.done() and not self.stopping.is_set():
                started_all.set()
                if on_ready is not None:
                    on_ready()
            else:
                readiness.cancel()
            await self.stopping.wait()
            stop_wait.cancel()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            self.stopping.set()
            await self._stop_all()
            for t in slots:
                t.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
        return 2 if self.failed else 0

    async def _stop_all(self) -> None:
        live = [w for w in self.workers.values() if w.proc.poll() is None]
        for w in live:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGTERM)
        waits = [w.exited for w in live]
        if not waits:
            return
        _, pending = await asyncio.wait(waits, timeout=GRACE_S)
        if pending:
            for w in live:
                if w.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        w.proc.kill()
            await asyncio.wait(pending, timeout=GRACE_S)


async def supervise(cfg: LanternaConfig, n: int, on_ready: Callable[[], None] | None = None) -> int:
    """Run ``n`` workers of this config until a signal; raises ConfigError for a start-up failure."""
    if n < 1:
        raise ConfigError(f"--workers must be >= 1, got {n}")
    check_port_free(cfg.gateway.host, cfg.gateway.port)
    with tempfile.TemporaryDirectory(prefix="lanterna-workers-") as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(cfg.model_dump(mode="json")))
        sup = Supervisor(path, n)
        rc = await sup.run(on_ready)
    if sup.failed:
        raise ConfigError(sup.failed)
    return rc


def run_supervised(command: str, n: int, cfg: LanternaConfig) -> int:
    """``lanterna gateway --workers N``: supervise until a signal, print where it listens."""
    from lanterna.cli.gateway import fail

    def banner() -> None:
        print(f"lanterna {command} listening on http://{cfg.gateway.host}:{cfg.gateway.port}/v1 "
              f"({n} workers, {len(cfg.endpoints.static)} endpoints)", file=sys.stderr, flush=True)

    try:
        return asyncio.run(supervise(cfg, n, banner))
    except ConfigError as exc:
        return fail(command, str(exc))


def _worker_main(argv: list[str]) -> int:
    """One worker: ``python -m lanterna.cli.workers CONFIG_JSON READY_FD``."""
    from lanterna.cli.gateway import fail, install_uvloop, run_main, serve_until_signal
    from lanterna.obs.logs import setup_logging

    config_path, ready_fd = argv[0], int(argv[1])
    try:
        cfg = LanternaConfig.model_validate(json.loads(Path(config_path).read_text()))
    except (OSError, ValueError) as exc:
        return fail("gateway", f"worker config {config_path}: {str(exc).splitlines()[0]}")
    setup_logging(cfg.gateway.log_format, cfg.gateway.log_level, access_log=cfg.gateway.access_log)
    install_uvloop()

    def ready(_gw: Any) -> None:
        os.write(ready_fd, b"ready\n")  # the fd stays open: its EOF tells the parent this worker exited

    return run_main("gateway", serve_until_signal(cfg, [], ready, worker=True))


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
