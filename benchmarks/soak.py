"""Soak: steady open-loop load through the gateway for a long time; watch RSS, file descriptors, latency drift.

    python benchmarks/soak.py --duration 30m --rate 20 --sims 3 --fault stop:120:20
    python benchmarks/soak.py --url http://127.0.0.1:8000 --model tiny --duration 10m   # an existing gateway

The script starts N ``lanterna sim`` processes and one ``lanterna gateway`` in front of them (unless
``--url``), sends Poisson arrivals at ``--rate`` (a mix of completions/chat, streaming/non-streaming, prompts
sharing a few long prefixes), and every ``--sample`` seconds records: gateway RSS and open fds
(``/proc/PID``), p50/p99 latency of the requests that finished in the window, errors by status, achieved
rate. ``--fault kind:at_s:for_s`` (kind ``stop`` = SIGSTOP/SIGCONT a sim, ``kill`` = SIGKILL and restart it
on the same port) injects faults; an error that finishes while a fault is active, or within ``--fault-grace``
seconds after it, is attributed to the fault. Writes ``benchmarks/results/soak.{json,png}`` and prints:
RSS growth after warm-up (%), p99 drift (first vs last windows), errors beyond injected faults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

RESULTS = Path(__file__).resolve().parent / "results"
PREFIXES = [" ".join(f"{w}{i}" for i in range(n)) for w, n in (("system", 120), ("doc", 300), ("policy", 60))]


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h`` -> seconds."""
    unit = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], None)
    return float(text[:-1]) * unit if unit else float(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Fault:
    kind: str  # stop | kill
    at_s: float
    for_s: float
    sim: int = 0
    done: bool = False

    @classmethod
    def parse(cls, text: str) -> Fault:
        kind, at, dur, *rest = text.split(":")
        if kind not in ("stop", "kill"):
            raise SystemExit(f"--fault kind must be stop or kill, got {kind!r}")
        return cls(kind, parse_duration(at), parse_duration(dur), int(rest[0]) if rest else 0)


@dataclass
class Window:
    t_s: float
    rss_mb: float | None
    fds: int | None
    sent: int
    done: int
    rate: float
    p50_ms: float | None
    p99_ms: float | None
    errors: dict[str, int] = field(default_factory=dict)
    fault_active: bool = False


class Stack:
    """N sims + one gateway as processes on loopback (own process groups; stopped in ``close``)."""

    def __init__(self, n: int, model: str, log_dir: Path, sim_args: list[str], gateway_args: list[str]) -> None:
        self.model, self.log_dir, self.sim_args = model, log_dir, sim_args
        self.sim_ports = [free_port() for _ in range(n)]
        self.kv_ports = {p: free_port() for p in self.sim_ports}  # each sim publishes KV events (precise routing)
        self.sims: list[subprocess.Popen[bytes]] = [self._start_sim(p) for p in self.sim_ports]
        self.port = free_port()
        cmd = [sys.executable, "-m", "lanterna.cli.main", "gateway", "--port", str(self.port), "--model", model,
               *sum((["--endpoint", f"127.0.0.1:{p}"] for p in self.sim_ports), []),
               *sum((["--kv-events", f"127.0.0.1:{p}=tcp://127.0.0.1:{k}"] for p, k in self.kv_ports.items()), []),
               *gateway_args]
        self.gateway = self._spawn(cmd, "gateway")

    def _spawn(self, cmd: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"soak-{name}.log", "ab")  # noqa: SIM115 (lives as long as the process)
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)

    def _start_sim(self, port: int) -> subprocess.Popen[bytes]:
        kv = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{self.kv_ports[port]}",
              "topic": f"kv@127.0.0.1:{port}@{self.model}"}
        return self._spawn([sys.executable, "-m", "lanterna.cli.main", "sim", "--model", self.model, "--host",
                            "127.0.0.1", "--port", str(port), "--kv-events-config", json.dumps(kv),
                            *self.sim_args], f"sim-{port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self, session: aiohttp.ClientSession, n: int, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.gateway.poll() is not None:
                raise SystemExit(f"gateway exited {self.gateway.returncode}; see {self.log_dir}/soak-gateway.log")
            try:
                async with session.get(self.url + "/health") as r:
                    if (await r.json()).get("ready_endpoints", 0) >= n:
                        return
            except (aiohttp.ClientError, ValueError):
                pass
            await asyncio.sleep(0.2)
        raise SystemExit("gateway not ready in time")

    def restart_sim(self, i: int) -> None:
        self.sims[i] = self._start_sim(self.sim_ports[i])

    def close(self) -> None:
        for p in [self.gateway, *self.sims]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGCONT)
                os.killpg(p.pid, signal.SIGTERM)
        for p in [self.gateway, *self.sims]:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def proc_stats(pid: int | None) -> tuple[float | None, int | None]:
    if pid is None:
        return None, None
    try:
        rss_kb = next(int(ln.split()[1]) for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ln.startswith("VmRSS:"))
        return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None, None


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def make_body(rng: random.Random, model: str, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    prefix = rng.choice(PREFIXES) if rng.random() < args.shared_prefix else ""
    text = f"{prefix} question {rng.randrange(10**9)}: " + " ".join(rng.choice("abcdefgh") * 3 for _ in range(20))
    body: dict[str, Any] = {"model": model, "max_tokens": rng.randint(4, args.max_tokens)}
    if rng.random() < args.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if rng.random() < args.chat:
        body["messages"] = [{"role": "system", "content": prefix or "be brief"}, {"role": "user", "content": text}]
        return "/v1/chat/completions", body
    body["prompt"] = text
    return "/v1/completions", body


async def one(session: aiohttp.ClientSession, url: str, body: dict[str, Any], timeout_s: float) -> str:
    """Send one request; the outcome: ``ok``, ``http_<status>``, ``stream_error``, ``incomplete``, ``timeout``,
    ``connect``."""
    try:
        async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            data = await r.read()
            if r.status != 200:
                return f"http_{r.status}"
            if body.get("stream"):
                frames = [ln for ln in data.split(b"\n") if ln.startswith(b"data: ")]
                if not frames or frames[-1] != b"data: [DONE]":
                    return "incomplete"
                if any(b'"error"' in f[:20] for f in frames):
                    return "stream_error"
            return "ok"
    except TimeoutError:
        return "timeout"
    except aiohttp.ClientConnectionError:
        return "connect"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from rich.live import Live
    from rich.table import Table

    duration, sample = parse_duration(args.duration), args.sample
    faults = [Fault.parse(f) for f in args.fault]
    rng = random.Random(args.seed)
    log_dir = Path(tempfile.mkdtemp(prefix="lanterna-soak-"))
    print(f"process logs in {log_dir}")
    stack = None if args.url else Stack(args.sims, args.model, log_dir, args.sim_arg, args.gateway_arg)
    url = args.url or stack.url  # type: ignore[union-attr]
    gw_pid = args.pid if args.url else stack.gateway.pid  # type: ignore[union-attr]
    conn = aiohttp.TCPConnector(limit=0)
    windows: list[Window] = []
    lat: list[float] = []
    errs: dict[str, int] = {}
    fault_errs: dict[str, int] = {}
    sent = done = 0
    active: list[Fault] = []
    fault_until = -1.0
    try:
        async with aiohttp.ClientSession(connector=conn) as session:
            if stack is not None:
                await stack.wait_ready(session, args.sims)
            t0 = time.monotonic()
            tasks: set[asyncio.Task[None]] = set()

            async def fire(path: str, body: dict[str, Any]) -> None:
                nonlocal done
                start = time.monotonic()
                outcome = await one(session, url + path, body, args.timeout)
                done += 1
                if outcome == "ok":
                    lat.append((time.monotonic() - start) * 1000)
                elif active or time.monotonic() - t0 <= fault_until:
                    fault_errs[outcome] = fault_errs.get(outcome, 0) + 1
                else:
                    errs[outcome] = errs.get(outcome, 0) + 1

            def table() -> Table:
                t = Table(title=f"soak {url}  {len(windows) * sample:.0f}/{duration:.0f}s")
                for c in ("t", "rate/s", "p50 ms", "p99 ms", "RSS MB", "fds", "errors", "fault"):
                    t.add_column(c)
                for w in windows[-12:]:
                    t.add_row(f"{w.t_s:.0f}", f"{w.rate:.1f}", f"{w.p50_ms or 0:.0f}", f"{w.p99_ms or 0:.0f}",
                              f"{w.rss_mb or 0:.1f}", str(w.fds), json.dumps(w.errors) if w.errors else "",
                              "yes" if w.fault_active else "")
                return t

            next_sample = sample
            last_sent = last_done = 0
            next_arrival = 0.0
            with Live(table(), refresh_per_second=2, transient=not sys.stdout.isatty()) as live:
                while (now := time.monotonic() - t0) < duration:
                    for f in faults:  # fault injection
                        if stack is None or f.done:
                            continue
                        proc = stack.sims[f.sim % len(stack.sims)]
                        if f not in active and now >= f.at_s:
                            active.append(f)
                            os.killpg(proc.pid, signal.SIGSTOP if f.kind == "stop" else signal.SIGKILL)
                        elif f in active and now >= f.at_s + f.for_s:
                            active.remove(f)
                            f.done = True
                            fault_until = now + args.fault_grace
                            if f.kind == "stop":
                                os.killpg(proc.pid, signal.SIGCONT)
                            else:
                                proc.wait()
                                stack.restart_sim(f.sim % len(stack.sims))
                    while next_arrival <= now:  # open-loop Poisson arrivals
                        path, body = make_body(rng, args.model, args)
                        task = asyncio.create_task(fire(path, body))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                        sent += 1
                        next_arrival += rng.expovariate(args.rate)
                    if now >= next_sample:
                        rss, fds = proc_stats(gw_pid)
                        w = Window(round(now, 1), rss, fds, sent - last_sent, done - last_done,
                                   (done - last_done) / sample, pct(lat, 0.5), pct(lat, 0.99),
                                   {**errs}, bool(active))
                        windows.append(w)
                        errs.clear()
                        lat.clear()
                        last_sent, last_done = sent, done
                        next_sample += sample
                        live.update(table())
                    await asyncio.sleep(min(0.05, max(0.0, next_arrival - now)))
            if tasks:
                await asyncio.wait(tasks, timeout=args.timeout)
    finally:
        if stack is not None:
            stack.close()
    return summarize(args, windows, fault_errs)


def summarize(args: argparse.Namespace, windows: list[Window], fault_errs: dict[str, int]) -> dict[str, Any]:
    warm = [w for w in windows if w.t_s >= args.warmup and w.rss_mb is not None]
    rss_growth = ((warm[-1].rss_mb - warm[0].rss_mb) / warm[0].rss_mb * 100) if len(warm) >= 2 else None  # type: ignore[operator]
    k = max(1, len(windows) // 10)
    calm = [w for w in windows if not w.fault_active and w.p99_ms is not None]
    first = [w.p99_ms for w in calm[:k] if w.p99_ms is not None]
    last = [w.p99_ms for w in calm[-k:] if w.p99_ms is not None]
    p99_first = sum(first) / len(first) if first else None
    p99_last = sum(last) / len(last) if last else None
    unexplained: dict[str, int] = {}
    for w in windows:
        for key, n in w.errors.items():
            unexplained[key] = unexplained.get(key, 0) + n
    summary = {
        "rss_growth_after_warmup_pct": None if rss_growth is None else round(rss_growth, 2),
        "rss_mb_first_last": [warm[0].rss_mb, warm[-1].rss_mb] if warm else None,
        "fds_first_last": [windows[0].fds, windows[-1].fds] if windows else None,
        "p99_ms_first_last": [p99_first, p99_last],
        "p99_drift_pct": round((p99_last - p99_first) / p99_first * 100, 1) if p99_first and p99_last else None,
        "errors_beyond_faults": unexplained,
        "errors_attributed_to_faults": fault_errs,
        "requests_sent": sum(w.sent for w in windows),
        "requests_done": sum(w.done for w in windows),
    }
    return {"config": {k: v for k, v in vars(args).items()}, "summary": summary,
            "windows": [asdict(w) for w in windows]}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = result["windows"]
    t = [w["t_s"] / 60 for w in ws]
    fig, ax = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    ax[0].plot(t, [w["rss_mb"] for w in ws])
    ax[0].set_ylabel("gateway RSS (MB)")
    ax[1].plot(t, [w["fds"] for w in ws])
    ax[1].set_ylabel("open fds")
    ax[2].plot(t, [w["p50_ms"] for w in ws], label="p50")
    ax[2].plot(t, [w["p99_ms"] for w in ws], label="p99")
    ax[2].set_ylabel("latency (ms)")
    ax[2].legend()
    ax[3].plot(t, [w["rate"] for w in ws], label="achieved req/s")
    ax[3].bar(t, [sum(w["errors"].values()) for w in ws], width=0.8 * (t[1] - t[0]) if len(t) > 1 else 0.1,
              color="red", label="errors (unattributed)")
    ax[3].set_ylabel("per window")
    ax[3].set_xlabel("minutes")
    ax[3].legend()
    for a in ax:
        for w in ws:
            if w["fault_active"]:
                a.axvspan(w["t_s"] / 60 - result["config"]["sample"] / 60, w["t_s"] / 60, color="orange", alpha=0.2)
    fig.suptitle("Lanterna gateway soak")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", default="30m")
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second (Poisson)")
    ap.add_argument("--sims", type=int, default=3)
    ap.add_argument("--model", default="soak-model")
    ap.add_argument("--url", help="an existing gateway (no processes started; faults need the stack)")
    ap.add_argument("--pid", type=int, help="the existing gateway's PID for RSS/fd sampling (with --url)")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds per window")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS baseline")
    ap.add_argument("--stream", type=float, default=0.5, help="share of streaming requests")
    ap.add_argument("--chat", type=float, default=0.5, help="share of chat requests")
    ap.add_argument("--shared-prefix", type=float, default=0.7, help="share of prompts with a shared prefix")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--fault", action="append", default=[], help="stop|kill:AT:FOR[:SIM], e.g. stop:5m:30s")
    ap.add_argument("--fault-grace", type=float, default=10.0)
    ap.add_argument("--sim-arg", action="append", default=[], help="extra argument for each sim")
    ap.add_argument("--gateway-arg", action="append", default=[], help="extra argument for the gateway")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "soak"))
    args = ap.parse_args()
    result = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    s = result["summary"]
    print(f"RSS growth after warm-up: {s['rss_growth_after_warmup_pct']}% {s['rss_mb_first_last']} MB; "
          f"fds {s['fds_first_last']}")
    print(f"p99 drift: {s['p99_drift_pct']}% (first {s['p99_ms_first_last'][0]} ms, last {s['p99_ms_first_last'][1]} ms)")
    print(f"errors beyond injected faults: {s['errors_beyond_faults'] or 0}; attributed to faults: "
          f"{s['errors_attributed_to_faults'] or 0}; requests {s['requests_done']}/{s['requests_sent']}")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
