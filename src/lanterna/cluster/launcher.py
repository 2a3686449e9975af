"""Local process supervisor: N ``lanterna sim`` replicas on free loopback ports, KV events on.

Each replica gets an HTTP port and a ZMQ publisher port; the launcher waits for ``/health`` with a
deadline (polling, no fixed sleeps), notices a replica that died during start-up (its stderr tail goes
into the error), and stops everything with SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

log = logging.getLogger(__name__)
_PORT_RETRIES = 3  # fresh ports for a replica whose port was taken between free_port() and its bind


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Child-side (Linux): get SIGTERM when the launcher dies, even by SIGKILL, so no replica is orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LaunchError(RuntimeError):
    """A replica failed to start; the message is one line fit for a person."""


@dataclass(slots=True)
class Replica:
    name: str
    host: str
    port: int
    kv_port: int | None
    model: str
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    role: str | None = None  # P/D role (``llm-d.ai/role``); None: aggregated
    sidecar_for: Replica | None = None  # a ``lanterna sidecar`` in front of this decode replica

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def kv_events_endpoint(self) -> str | None:
        return f"tcp://{self.host}:{self.kv_port}" if self.kv_port else None

    def stderr_tail(self, n: int = 400) -> str:
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-3:])[-n:]


@dataclass(slots=True)
class SimLauncher:
    """Start with ``await launcher.start(n)``; always ``await launcher.stop()`` (idempotent)."""

    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    host: str = "127.0.0.1"
    sim_args: list[str] = field(default_factory=list)
    kv_events: bool = True
    python: str = sys.executable
    start_timeout_s: float = 60.0
    replicas: list[Replica] = field(default_factory=list)
    _logdir: tempfile.TemporaryDirectory[str] | None = None
    _num_spawned: int = 0  # names and seeds stay unique while replicas come and go (autoscaling)

    def _command(self, r: Replica) -> list[str]:
        if r.sidecar_for is not None:
            return [self.python, "-m", "lanterna.cli.main", "sidecar", "--host", self.host, "--port", str(r.port),
                    "--decode", r.sidecar_for.address, "--log-format", "text",
                    *sum((["--allow-prefiller", p.address] for p in self.replicas if p.role == "prefill"), [])]
        role = ["--role", r.role] if r.role is not None else []
        cmd = [self.python, "-m", "lanterna.cli.main", "sim", *role, "--model", self.model, "--host", self.host,
               "--port", str(r.port), "--seed", str(self._num_spawned)]
        if r.kv_port:
            cmd += ["--kv-events-config", json.dumps({
                "enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{r.kv_port}",  # binds (vLLM: "*" binds, a host connects)
                "topic": f"kv@{r.address}@{self.model}"})]
        return cmd + self.sim_args

    def spawn(self, role: str | None = None, sidecar_for: Replica | None = None) -> Replica:
        """One sim (P/D ``role`` when given), or with ``sidecar_for`` a sidecar in front of that decode sim
        (allowing every prefill replica started before it)."""
        if self._logdir is None:
            self._logdir = tempfile.TemporaryDirectory(prefix="lanterna-up-")
        i = self._num_spawned
        kv = self.kv_events and sidecar_for is None
        r = Replica(f"sidecar-{i}" if sidecar_for else f"sim-{i}", self.host, free_port(self.host),
                    free_port(self.host) if kv else None, self.model, role=role, sidecar_for=sidecar_for)
        r.log_path = Path(self._logdir.name) / f"{r.name}.log"
        self._popen(r)
        self.replicas.append(r)
        self._num_spawned += 1
        return r

    def _popen(self, r: Replica) -> None:
        assert r.log_path is not None
        with open(r.log_path, "wb") as logf:
            r.proc = subprocess.Popen(self._command(r), stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                      start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                      preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def _retry_on_taken_port(self, r: Replica, tries: dict[str, int]) -> bool:
        """A free port is only free until someone else binds it (free_port releases it before the child
        binds): a replica that lost that race is started again on fresh ports, a few times at most."""
        if "address already in use" not in r.stderr_tail().lower() or tries.get(r.name, 0) >= _PORT_RETRIES:
            return False
        tries[r.name] = tries.get(r.name, 0) + 1
        r.port = free_port(self.host)
        if r.kv_port is not None:
            r.kv_port = free_port(self.host)
        self._popen(r)
        return True

    async def wait_ready(self, replicas: list[Replica]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout_s
        pending = list(replicas)
        tries: dict[str, int] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as s:
            while pending:
                for r in list(pending):
                    assert r.proc is not None
                    if r.proc.poll() is not None:
                        if self._retry_on_taken_port(r, tries):
                            continue
                        raise LaunchError(f"{r.name} exited with status {r.proc.returncode}: {r.stderr_tail()}")
                    try:
                        async with s.get(f"http://{r.address}/health") as resp:
                            if resp.status == 200:
                                pending.remove(r)
                    except (aiohttp.ClientError, OSError, TimeoutError):
                        pass
                if pending:
                    if loop.time() > deadline:
                        raise LaunchError(f"{pending[0].name} not healthy after {self.start_timeout_s:g}s: "
                                          f"{pending[0].stderr_tail()}")
                    await asyncio.sleep(0.05)

    async def start(self, n: int, role: str | None = None) -> list[Replica]:
        return await self._ready_or_stop([self.spawn(role) for _ in range(n)])

    async def start_pd(self, num_prefill: int, num_decode: int, *, sidecars: bool = False) -> list[Replica]:
        """A P/D topology: the endpoints to route to (prefill sims, then decode sims or their sidecars)."""
        prefill = [self.spawn("prefill") for _ in range(num_prefill)]
        decode = [self.spawn("decode") for _ in range(num_decode)]
        await self._ready_or_stop(prefill + decode)
        if not sidecars:
            return prefill + decode
        fronts = [self.spawn("decode", sidecar_for=d) for d in decode]
        return prefill + await self._ready_or_stop(fronts)

    async def _ready_or_stop(self, new: list[Replica]) -> list[Replica]:
        try:
            await self.wait_ready(new)
        except BaseException:
            await self.stop()
            raise
        return new

    async def stop(self, grace_s: float = 5.0) -> None:
        procs = [r.proc for r in self.replicas if r.proc is not None and r.proc.poll() is None]
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        for p in procs:
            try:
                await asyncio.to_thread(p.wait, max(0.0, deadline - loop.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.replicas.clear()
        if self._logdir is not None:
            self._logdir.cleanup()
            self._logdir = None

    async def stop_replica(self, r: Replica, grace_s: float = 5.0) -> None:
        """Stop one replica (SIGTERM, then SIGKILL after ``grace_s``) and forget it (autoscaling down)."""
        if r in self.replicas:
            self.replicas.remove(r)
        p = r.proc
        if p is None or p.poll() is not None:
            return
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            await asyncio.to_thread(p.wait, grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            await asyncio.to_thread(p.wait)

    def stop_sync(self) -> None:
        """Last-resort cleanup (atexit): kill whatever is still running."""
        for r in self.replicas:
            if r.proc is not None and r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()
