"""``lanterna gateway --workers 2``: two gateway processes on one port (SO_REUSEPORT) in front of two sims.

Both workers answer (the ``x-lanterna-worker`` pid header), a worker killed with SIGKILL is replaced, and
SIGTERM to the parent stops every process of the group: none is left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from lanterna.cli.workers import WORKER_HEADER
from lanterna.cluster.launcher import SimLauncher
from tests.integration.test_gateway_support import GatewayProc, run_lanterna, stop

pytestmark = pytest.mark.integration

MODEL = "sim-model"


def _complete(g: GatewayProc, prompt: str) -> int:
    """One completion on a new connection (the kernel balances connections); the serving worker's pid."""
    req = urllib.request.Request(g.url + "/v1/completions", headers={"content-type": "application/json"},
                                 data=json.dumps({"model": MODEL, "prompt": prompt, "max_tokens": 2}).encode())
    with urllib.request.urlopen(req, timeout=30) as r:
        body = json.loads(r.read())
        assert r.status == 200 and body["choices"][0]["text"] is not None
        return int(r.headers[WORKER_HEADER])


def _pids_serving(g: GatewayProc, want: int, deadline_s: float = 30.0) -> set[int]:
    seen: set[int] = set()
    deadline = time.monotonic() + deadline_s
    i = 0
    while len(seen) < want:  # P(one worker unseen after k connections) = 2^-(k-1)
        assert time.monotonic() < deadline, f"only workers {seen} answered\n{g.log_tail()}"
        seen.add(_complete(g, f"Prompt number {i} about workers."))
        i += 1
    return seen


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_serve_restart_and_stop_with_no_orphans(tmp_path: Path) -> None:
    launcher = SimLauncher(model=MODEL, sim_args=["--timing", "constant"])
    try:
        replicas = asyncio.run(launcher.start(2))
        args = ["gateway", "--workers", "2", "--log-format", "text", "--model", MODEL,
                *(x for r in replicas for x in ("--endpoint", r.address))]
        with run_lanterna(args, tmp_path, min_ready=2) as g:
            first = _pids_serving(g, 2)
            assert g.proc.pid not in first  # the parent supervises; the workers serve

            victim = min(first)
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while _alive(victim):  # until reaped: connections queued on its socket die with it (RST)
                assert time.monotonic() < deadline, f"worker {victim} not reaped"
                time.sleep(0.01)
            while True:  # the survivor keeps serving while the parent restarts the victim after its back-off
                now = _pids_serving(g, 2)
                if victim not in now and len(now) == 2:
                    break
                assert time.monotonic() < deadline, f"worker {victim} not replaced\n{g.log_tail()}"
            assert "gateway_worker_exited" in g.log_path.read_text()
            workers = now | first

            assert stop(g) == 0, g.log_tail()  # SIGTERM to the parent only
            assert not [p for p in workers if _alive(p)]
            with pytest.raises(ProcessLookupError):  # nothing at all left in the parent's process group
                os.killpg(g.proc.pid, 0)
    finally:
        asyncio.run(launcher.stop())
