"""Helpers for the gateway integration tests: run ``lanterna gateway`` / ``lanterna up`` as processes.

(Collected by pytest but holds no tests.) Every process is started on free ports and stopped, with its
children, in a ``finally``; readiness is polled on ``/health`` with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port


@dataclass
class GatewayProc:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get_json(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return json.loads(r.read())

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])


def _ready(g: GatewayProc, min_ready: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if g.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {g.proc.returncode}:\n{g.log_tail()}")
        try:
            if g.get_json("/health")["ready_endpoints"] >= min_ready:
                return
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"gateway not ready after {timeout_s}s:\n{g.log_tail()}")
        time.sleep(0.05)


@contextlib.contextmanager
def run_lanterna(args: Sequence[str], log_dir: Path, *, min_ready: int = 1, timeout_s: float = 90.0,
                 open_admin: bool = True) -> Iterator[GatewayProc]:
    """``lanterna <args> --port P`` until the block ends; SIGTERM then SIGKILL (whole process group)."""
    port = free_port()
    log_path = log_dir / f"lanterna-{port}.log"
    with open(log_path, "wb") as logf:
        # Tests read /debug/endpoints (admin routes answer 404 unless admin keys or auth.open_admin are set).
        admin = ["--set", "auth.open_admin=true"] if args and args[0] in ("gateway", "up") and open_admin else []
        proc = subprocess.Popen([sys.executable, "-m", "lanterna.cli.main", *args, *admin, "--port", str(port)],
                                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    g = GatewayProc(port, proc, log_path)
    try:
        _ready(g, min_ready, timeout_s)
        yield g
    finally:
        stop(g)


def stop(g: GatewayProc, grace_s: float = 10.0) -> int:
    if g.proc.poll() is None:
        g.proc.send_signal(signal.SIGTERM)
        try:
            g.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(g.proc.pid, signal.SIGKILL)
            g.proc.wait()
    return g.proc.returncode
