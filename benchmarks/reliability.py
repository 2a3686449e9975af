"""Faults and hostile input against a real gateway and real simulated replicas: the table in docs/reliability.md.

    .venv/bin/python benchmarks/reliability.py            # ~2 minutes on 2 cores; rewrites docs/reliability.md

Every scenario starts from a healthy stack (3 ``lanterna sim`` replicas behind ``lanterna gateway`` with its
defaults, all on loopback), injects one fault or sends one kind of hostile input, then measures what a client
sees: statuses, error shapes, requests lost (a request that could have been retried or never started and still
did not get a 200), and recovery time (fault cleared -> the replica serves again). Processes are real: replicas
are killed with SIGKILL, stalled with SIGSTOP and restarted on the same port. Results go to
``benchmarks/results/reliability.json`` and the markdown table to ``docs/reliability.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.conftest import free_port  # noqa: E402

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
OUT_JSON = REPO / "benchmarks" / "results" / "reliability.json"
OUT_MD = REPO / "docs" / "reliability.md"
ADDR_MARK = "127.0.0.1:"  # a client-facing body must never name an internal address


@dataclass
class Row:
    """One line of the table."""

    scenario: str
    injected: str
    observed: str
    lost: int | None  # requests that could be retried (or never started) and still failed; None: not applicable
    recovery_s: float | None
    ok: bool
    details: dict[str, Any] = field(default_factory=dict)


# -- processes -------------------------------------------------------------------------------------------------


class Proc:
    def __init__(self, name: str, cmd: list[str], logdir: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.cmd, self.logdir, self.env = name, cmd, logdir, env
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.logdir / f"{self.name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.popen = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                      env={**os.environ, **(self.env or {})})
        log.close()

    def signal(self, sig: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def python() -> str:
    return sys.executable


class Stack:
    """3 sims + 1 gateway; sims keep their ports across restarts."""

    def __init__(self, logdir: Path, n: int = 3, gateway_args: list[str] | None = None,
                 backends: list[str] | None = None) -> None:
        self.logdir = logdir
        self.sim_ports = [free_port() for _ in range(n)] if backends is None else []
        self.sims = [Proc(f"sim{i}", [python(), "-m", "lanterna.cli.main", "sim", "--model", MODEL, "--port", str(p),
                                      "--host", "127.0.0.1", "--seed", str(i)], logdir)
                     for i, p in enumerate(self.sim_ports)]
        addrs = backends if backends is not None else [f"127.0.0.1:{p}" for p in self.sim_ports]
        self.addresses = addrs
        self.port = free_port()
        cmd = [python(), "-m", "lanterna.cli.main", "gateway", "--host", "127.0.0.1", "--port", str(self.port)]
        for a in addrs:
            cmd += ["--endpoint", a]
        self.gateway = Proc("gateway", cmd + list(gateway_args or []), logdir)
        self.url = f"http://127.0.0.1:{self.port}"
        mport = [a.split("=", 1)[1] for a in gateway_args or [] if a.startswith("gateway.metrics_port=")]
        self.metrics_base = f"http://127.0.0.1:{mport[0]}" if mport else self.url  # /metrics lives here

    async def start(self, session: aiohttp.ClientSession) -> None:
        for s in self.sims:
            s.start()
        for p in self.sim_ports:
            await wait_status(session, f"http://127.0.0.1:{p}/health", 200, 60)
        self.gateway.start()
        await wait_status(session, f"{self.url}/ready", 200, 60)
        await wait_ready_all(session, self, 30)

    def stop(self) -> None:
        self.gateway.stop()
        for s in self.sims:
            s.stop()

    def sim_of(self, endpoint: str | None) -> int | None:
        for i, a in enumerate(self.addresses):
            if endpoint is not None and endpoint.endswith(a):
                return i
        return None


async def wait_status(session: aiohttp.ClientSession, url: str, status: int, timeout_s: float) -> float:
    """Poll until ``url`` answers ``status``; the seconds it took (raises on timeout)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                await r.read()
                if r.status == status:
                    return time.monotonic() - t0
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{url} did not answer {status} within {timeout_s}s")


async def wait_ready_all(session: aiohttp.ClientSession, stack: Stack, timeout_s: float) -> None:
    """Until every replica is healthy and no circuit is open, as the gateway's metrics say."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        m = await gateway_metrics(session, stack.metrics_base)
        if m.get("ready", 0) >= len(stack.addresses) and m.get("circuit_open", 0) == 0:
            return
        await asyncio.sleep(0.1)


async def gateway_metrics(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """Ready endpoints and open circuits from the gateway's /metrics (GAIE + lanterna names)."""
    out = {"ready": 0.0, "circuit_open": 0.0}
    try:
        async with session.get(f"{url}/metrics") as r:
            text = await r.text()
    except aiohttp.ClientError:
        return out
    for line in text.splitlines():
        if line.startswith("inference_pool_ready_pods"):
            out["ready"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("lanterna_gateway_circuit_open"):
            out["circuit_open"] += float(line.rsplit(" ", 1)[1])
    return out


# -- requests --------------------------------------------------------------------------------------------------


@dataclass
class Result:
    status: int
    body: bytes
    headers: dict[str, str]
    seconds: float
    endpoint: str | None = None

    def openai_error(self) -> bool:
        try:
            err = json.loads(self.body)["error"]
            return isinstance(err["message"], str) and isinstance(err["type"], str) and "code" in err
        except (ValueError, KeyError, TypeError):
            return False


def completion(prompt: str, max_tokens: int = 8, stream: bool = False) -> bytes:
    return json.dumps({"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "stream": stream}).encode()


async def post(session: aiohttp.ClientSession, url: str, body: bytes, *, path: str = "/v1/completions",
               headers: dict[str, str] | None = None, timeout_s: float = 60.0) -> Result:
    t0 = time.monotonic()
    hdrs = {"content-type": "application/json", **(headers or {})}
    try:
        async with session.post(url + path, data=body, headers=hdrs,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            data = await r.read()
            return Result(r.status, data, dict(r.headers), time.monotonic() - t0,
                          r.headers.get("x-gateway-destination-endpoint"))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Result(-1, repr(exc).encode(), {}, time.monotonic() - t0)


def _has_error_frame(data: bytes) -> bool:
    """An SSE frame whose JSON is an error object (generated text may well contain the word "error")."""
    for line in data.split(b"\n"):
        if line.startswith(b"data: {") and b'"error"' in line:
            try:
                if "error" in json.loads(line[6:]):
                    return True
            except ValueError:
                return True
    return False


async def stream(session: aiohttp.ClientSession, url: str, max_tokens: int, timeout_s: float = 60.0) -> Result:
    """A streaming completion; status 200 only if it ended with [DONE] and no error frame."""
    t0 = time.monotonic()
    try:
        async with session.post(url + "/v1/completions", data=completion("stream me", max_tokens, True),
                                headers={"content-type": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            data = await r.read()
            status = r.status
            if status == 200 and (_has_error_frame(data) or not data.rstrip().endswith(b"data: [DONE]")):
                status = 599  # stream ended with an error frame (client told) or cut
            return Result(status, data, dict(r.headers), time.monotonic() - t0,
                          r.headers.get("x-gateway-destination-endpoint"))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Result(-1, repr(exc).encode(), {}, time.monotonic() - t0)


def statuses(results: list[Result]) -> str:
    c = Counter(r.status for r in results)
    return ", ".join(f"{n}x {s if s > 0 else 'client error'}" for s, n in sorted(c.items()))


def leaks_address(results: list[Result]) -> bool:
    return any(ADDR_MARK in r.body.decode("utf-8", "replace") for r in results if r.status != 200)


async def spread(session: aiohttp.ClientSession, stack: Stack, n: int = 30) -> tuple[int, Counter[int | None]]:
    """n normal requests, 4 at a time: (successes, requests per replica)."""
    sem = asyncio.Semaphore(4)

    async def one(i: int) -> Result:
        async with sem:
            return await post(session, stack.url, completion(f"spread {i} {time.monotonic()}", 4))

    rs = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(r.status == 200 for r in rs), Counter(stack.sim_of(r.endpoint) for r in rs if r.status == 200)


# -- scenarios -------------------------------------------------------------------------------------------------


async def poison_utf8(session: aiohttp.ClientSession, stack: Stack) -> Row:
    bad = (b'{"model": "' + MODEL.encode() + b'", "max_tokens": 4, "messages": [{"role": "user", '
           b'"content": "hi \xed\xa0\x80 there"}]}')
    rs = [await post(session, stack.url, bad, path="/v1/chat/completions") for _ in range(6)]
    m = await gateway_metrics(session, stack.url)
    ok_n, per = await spread(session, stack)
    ok = all(r.status == 400 and r.openai_error() for r in rs) and m["circuit_open"] == 0 and len(per) == 3
    return Row("poison request: invalid UTF-8 (lone surrogate) in chat content, x6", "6 requests",
               f"{statuses(rs)}; open circuits after: {int(m['circuit_open'])}; next 30 requests: {ok_n} ok over "
               f"{len(per)} replicas", 30 - ok_n, None, ok, {"per_replica": dict(per)})


async def hostile_bodies(session: aiohttp.ClientSession, stack: Stack) -> list[Row]:
    rows = []
    cases: list[tuple[str, bytes, dict[str, str], int]] = [
        ("invalid UTF-8 in `prompt`", b'{"model": "' + MODEL.encode() + b'", "prompt": "a\xff\xfeb", "max_tokens": 2}',
         {}, 400),
        ("JSON nested 100,000 levels", b'{"model": "m", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}, 400),
        ("escaped lone surrogate `\\ud800` in prompt",
         b'{"model": "' + MODEL.encode() + b'", "prompt": "x\\ud800y", "max_tokens": 2}', {}, 400),
        ("gzip body with `content-encoding: gzip`", gzip.compress(completion("zipped", 2)),
         {"content-encoding": "gzip"}, 200),
        ("corrupt gzip with `content-encoding: gzip`", b"\x1f\x8b\x08\x00garbage", {"content-encoding": "gzip"}, 400),
        ("gzip bomb (64 MiB of zeros, 64 KiB compressed)", _bomb(), {"content-encoding": "gzip"}, 413),
        ("body that is not JSON", b"{not json", {}, 400),
        ("`max_tokens` of type string", b'{"model": "' + MODEL.encode() + b'", "prompt": "a", "max_tokens": "x"}', {},
         400),
    ]
    for name, body, hdrs, want in cases:
        rs = [await post(session, stack.url, body, headers=hdrs) for _ in range(3)]
        m = await gateway_metrics(session, stack.url)
        shape = all(r.openai_error() for r in rs if r.status != 200)
        ok = all(r.status == want for r in rs) and shape and m["circuit_open"] == 0 and not leaks_address(rs)
        rows.append(Row(name, "3 requests", f"{statuses(rs)} in {max(r.seconds for r in rs) * 1000:.0f} ms max; "
                        f"OpenAI error shape: {'yes' if shape else 'NO'}; open circuits: {int(m['circuit_open'])}",
                        None, None, ok))
    return rows


def _bomb() -> bytes:
    comp = gzip.compress(b"0" * (64 << 20), compresslevel=9)  # 64 MiB of zeros (~64 KiB): over the body limit
    return comp


async def probe_disconnect(session: aiohttp.ClientSession, stack: Stack) -> Row:
    """Open replica 0's breaker (killed), restart it, then let the half-open probe's client vanish."""
    victim = stack.sims[0]
    victim.kill()
    burst = [post(session, stack.url, completion(f"while down {i}", 4)) for i in range(12)]
    rs = await asyncio.gather(*burst)
    victim.start()
    t_restart = time.monotonic()
    await wait_status(session, f"http://{stack.addresses[0]}/health", 200, 60)
    # Two requests whose clients give up after 0.5 s: one of them is the half-open probe.
    await asyncio.gather(*(post(session, stack.url, completion(f"probe {i}", 3000), timeout_s=0.5) for i in range(2)))
    served_at = None
    per: Counter[int | None] = Counter()
    deadline = time.monotonic() + 20
    ok_n = total = 0
    while time.monotonic() < deadline and served_at is None:
        n, c = await spread(session, stack, 12)
        ok_n, total = ok_n + n, total + 12
        per.update(c)
        if c.get(0):
            served_at = time.monotonic() - t_restart
    lost = sum(r.status != 200 for r in rs) + (total - ok_n)
    return Row("half-open probe's client disconnects (replica killed, breaker opened, replica back)",
               "SIGKILL 1 of 3, restart, 2 probe-time clients with a 0.5 s timeout",
               f"while down: {statuses(rs)}; after: replica 0 served again after {served_at or float('nan'):.1f} s "
               f"of restart ({per.get(0, 0)} of {total} requests)", lost,
               served_at, served_at is not None and lost == 0)


async def stall(session: aiohttp.ClientSession, stack: Stack) -> Row:
    """SIGSTOP one replica with non-streaming requests in flight on every replica."""
    victim = stack.sims[1]
    tasks = [asyncio.create_task(post(session, stack.url, completion(f"stall {i} {time.monotonic()}", 300),
                                      timeout_s=90)) for i in range(12)]
    await asyncio.sleep(0.3)  # let them reach the replicas (requests take ~2 s there)
    victim.signal(signal.SIGSTOP)
    t0 = time.monotonic()
    rs = await asyncio.gather(*tasks)
    worst = max(r.seconds for r in rs)
    done_in = time.monotonic() - t0
    victim.signal(signal.SIGCONT)
    rec = await wait_status(session, f"http://{stack.addresses[1]}/health", 200, 30)
    lost = sum(r.status != 200 for r in rs)
    return Row("replica stalls (SIGSTOP) with requests in flight", "SIGSTOP 1 of 3 under 12 in-flight requests",
               f"{statuses(rs)}; all answered {done_in:.1f} s after the stall (slowest request {worst:.1f} s)",
               lost, rec, lost == 0 and done_in < 20)


async def all_stall(session: aiohttp.ClientSession, stack: Stack) -> Row:
    """Every replica stalled: clients must get an answer (an error) within seconds, not minutes."""
    for s in stack.sims:
        s.signal(signal.SIGSTOP)
    rs = await asyncio.gather(*(post(session, stack.url, completion(f"all stalled {i}", 4), timeout_s=180)
                                for i in range(4)))
    for s in stack.sims:
        s.signal(signal.SIGCONT)
    worst = max(r.seconds for r in rs)
    rec = await wait_status(session, f"{stack.url}/ready", 200, 30) if True else None
    ok = worst < 30 and all(r.status in (503, 504) and r.openai_error() for r in rs) and not leaks_address(rs)
    return Row("every replica stalls (SIGSTOP x3)", "4 requests", f"{statuses(rs)} after {worst:.1f} s at most",
               None, rec, ok)


async def killed_mid_stream(session: aiohttp.ClientSession, stack: Stack) -> Row:
    victim = stack.sims[2]
    streams = [asyncio.create_task(stream(session, stack.url, 400)) for _ in range(6)]
    plain = [asyncio.create_task(post(session, stack.url, completion(f"mid {i} {time.monotonic()}", 300)))
             for i in range(6)]
    await asyncio.sleep(0.5)
    victim.kill()
    ss = await asyncio.gather(*streams)
    ps = await asyncio.gather(*plain)
    victim.start()
    t0 = time.monotonic()
    await wait_status(session, f"http://{stack.addresses[2]}/health", 200, 60)
    served = None
    while time.monotonic() - t0 < 30:
        _, c = await spread(session, stack, 12)
        if c.get(2):
            served = time.monotonic() - t0
            break
    cut = sum(r.status == 599 for r in ss)
    lost = sum(r.status != 200 for r in ps) + sum(r.status not in (200, 599) for r in ss)
    return Row("replica killed mid-stream (SIGKILL)", "SIGKILL 1 of 3 under 6 streams + 6 non-streaming requests",
               f"streams: {cut} ended with an OpenAI error frame + [DONE] (bytes had reached the client), "
               f"{sum(r.status == 200 for r in ss)} complete; non-streaming: {statuses(ps)}", lost, served,
               lost == 0 and served is not None)


async def all_down(session: aiohttp.ClientSession, stack: Stack) -> Row:
    for s in stack.sims:
        s.kill()
    await asyncio.sleep(0.2)
    first = await post(session, stack.url, completion("nobody home", 4))
    # Wait until health has noticed, then what a client and a load balancer see.
    t0 = time.monotonic()
    ready_503 = None
    while time.monotonic() - t0 < 15:
        async with session.get(f"{stack.url}/ready") as r:
            await r.read()
            if r.status == 503:
                ready_503 = time.monotonic() - t0
                break
        await asyncio.sleep(0.1)
    rs = [await post(session, stack.url, completion("nobody home", 4)) for _ in range(3)]
    async with session.get(f"{stack.url}/health") as r:
        live = r.status
    for s in stack.sims:
        s.start()
    t1 = time.monotonic()
    await wait_status(session, f"{stack.url}/ready", 200, 60)
    while time.monotonic() - t1 < 60:
        if (await post(session, stack.url, completion("back", 2))).status == 200:
            break
    rec = time.monotonic() - t1
    good = all(r.status == 503 and "retry-after" in {k.lower() for k in r.headers}
               and r.openai_error() for r in rs)
    ok = good and ready_503 is not None and live == 200 and not leaks_address([first, *rs])
    return Row("every replica down (SIGKILL x3)", "requests while down",
               f"first request {first.status}; then {statuses(rs)} with Retry-After; /ready 503 after "
               f"{ready_503 if ready_503 is not None else float('nan'):.1f} s, /health {live}; no internal "
               f"address in errors: {'yes' if not leaks_address([first, *rs]) else 'NO'}", None, rec, ok)


async def slow_clients(session: aiohttp.ClientSession, stack: Stack) -> Row:
    """400 connections that send half a request head (slowloris), 50 that stop mid-body."""
    conns = []
    for i in range(450):
        try:
            r, w = await asyncio.open_connection("127.0.0.1", stack.port)
        except OSError:
            break
        if i < 400:
            w.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        else:
            w.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"model\":")
        await w.drain()
        conns.append((r, w))
    t0 = time.monotonic()
    mid = await post(session, stack.url, completion("while slowloris", 2))

    async def closed(r: asyncio.StreamReader) -> float | None:
        try:
            async with asyncio.timeout(60):
                while await r.read(65536):
                    pass
            return time.monotonic() - t0
        except (TimeoutError, OSError):
            return None

    times = await asyncio.gather(*(closed(r) for r, _ in conns))
    for _, w in conns:
        w.close()
    shut = [t for t in times if t is not None]
    worst = max(shut) if len(shut) == len(times) else None
    ok = worst is not None and worst < 30 and mid.status == 200
    return Row("slow clients: 400 half-sent heads + 50 half-sent bodies", f"{len(conns)} connections",
               f"{len(shut)}/{len(conns)} closed by the gateway, last after "
               f"{worst if worst is not None else float('nan'):.1f} s; a normal request meanwhile: {mid.status} in "
               f"{mid.seconds * 1000:.0f} ms", None, None, ok)


async def headers_and_routes(session: aiohttp.ClientSession, stack: Stack) -> list[Row]:
    rows = []
    big = await post(session, stack.url, completion("big header", 2), headers={"x-big": "A" * 70_000})
    many = await post(session, stack.url, completion("many headers", 2), headers={f"x-h{i}": "1" for i in range(300)})
    for name, r in (("one 70 KB header", big), ("300 headers", many)):
        ok = r.status == 431 and r.openai_error() and b"AAAA" not in r.body
        rows.append(Row(f"oversized request head: {name}", "1 request", f"{r.status}, OpenAI error shape: "
                        f"{'yes' if r.openai_error() else 'NO'}, echoes the bytes: {'yes' if b'AAAA' in r.body else 'no'}",
                        None, None, ok))
    async with session.get(f"{stack.url}/nope") as r:
        nf = Result(r.status, await r.read(), dict(r.headers), 0)
    async with session.delete(f"{stack.url}/v1/completions") as r:
        na = Result(r.status, await r.read(), dict(r.headers), 0)
    rows.append(Row("unknown path / wrong method", "GET /nope, DELETE /v1/completions", f"{nf.status} and {na.status}; "
                    f"OpenAI error shape: {'yes' if nf.openai_error() and na.openai_error() else 'NO'}", None, None,
                    nf.status == 404 and na.status == 405 and nf.openai_error() and na.openai_error()))
    return rows


async def spoofed_headers(session: aiohttp.ClientSession, logdir: Path) -> Row:
    """An echo replica shows what the gateway forwards: no client credential, no internal llm-d headers."""
    seen: list[dict[str, str]] = []

    async def comp(req: web.Request) -> web.Response:
        seen.append(dict(req.headers))
        await req.read()
        return web.json_response({"id": "x", "object": "text_completion", "created": 0, "model": MODEL,
                                  "choices": [{"index": 0, "text": "ok", "finish_reason": "length", "logprobs": None}],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                               "owned_by": "vllm", "root": MODEL, "parent": None,
                                                               "max_model_len": 8192}]})

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="")

    app = web.Application()
    app.router.add_post("/v1/completions", comp)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", ok)
    app.router.add_get("/metrics", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stack = Stack(logdir, backends=[f"127.0.0.1:{port}"])
    try:
        stack.gateway.start()
        await wait_status(session, f"{stack.url}/v1/models", 200, 60)
        r = await post(session, stack.url, completion("spoof", 2), headers={
            "authorization": "Bearer client-secret", "x-prefiller-host-port": "169.254.169.254:80",
            "x-gateway-destination-endpoint": "10.0.0.1:8000", "x-gateway-inference-objective": "999999"})
    finally:
        stack.gateway.stop()
        await runner.cleanup()
    got = {k.lower(): v for k, v in (seen[-1] if seen else {}).items()}
    leaked = [h for h in ("authorization", "x-prefiller-host-port", "x-gateway-destination-endpoint") if h in got]
    return Row("header spoofing: client sends Authorization, x-prefiller-host-port, x-gateway-destination-endpoint, "
               "priority 999999", "1 request to an echo replica",
               f"{r.status}; forwarded upstream: {', '.join(leaked) or 'none of them'}", None, None,
               r.status == 200 and not leaked)


ADMIN_KEY = "admin-reliability-key"
KEYS = {"alpha": {"tenant": "team-a", "max_priority": 2, "requests_per_s": 4, "burst": 4},
        "beta": {"tenant": "team-b", "max_priority": 0}}


def auth_args(logdir: Path) -> list[str]:
    """A gateway with a keys file (hashes only), an admin key and /metrics on its own port."""
    from lanterna.auth.keys import hash_key

    keys_file = logdir / "keys.json"
    keys_file.write_text(json.dumps({"keys": [{"hash": hash_key(f"sk-{n}"), "name": n, **spec}
                                              for n, spec in KEYS.items()]}))
    return ["--set", "auth.enabled=true", "--set", f"auth.keys_file={keys_file}",
            "--set", f"auth.admin_keys=[{hash_key(ADMIN_KEY)}]", "--set", f"gateway.metrics_port={free_port()}"]


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def _get(session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> Result:
    t0 = time.monotonic()
    async with session.get(url, headers=headers or {}) as r:
        return Result(r.status, await r.read(), dict(r.headers), time.monotonic() - t0)


async def auth(session: aiohttp.ClientSession, stack: Stack) -> list[Row]:
    """API keys: 401 without a valid key, a key's request rate under 8 concurrent clients, admin routes."""
    rows = []
    body = completion("keyed", 2)
    missing = [await post(session, stack.url, body, headers=h) for h in
               ({}, _bearer("sk-wrong"), {"x-api-key": "sk-wrong"}, _bearer(ADMIN_KEY))]
    shape = all(r.openai_error() for r in missing)
    rows.append(Row("no API key, a wrong key, or an admin key on an inference route", "4 requests",
                    f"{statuses(missing)}; OpenAI error shape: {'yes' if shape else 'NO'}", None, None,
                    all(r.status == 401 for r in missing) and shape))
    sem = asyncio.Semaphore(8)

    async def one(i: int, name: str) -> tuple[str, Result]:
        async with sem:
            return name, await post(session, stack.url, completion(f"rl {i}", 2),
                                    headers={**_bearer(f"sk-{name}"), "x-gateway-inference-objective": "999999"})

    t0 = time.monotonic()
    rs = await asyncio.gather(*(one(i, n) for i in range(20) for n in ("alpha", "beta")))
    elapsed = time.monotonic() - t0
    alpha = [r for n, r in rs if n == "alpha"]
    beta = [r for n, r in rs if n == "beta"]
    ok_a = sum(r.status == 200 for r in alpha)
    allowed = 4 + 4 * elapsed
    limited = [r for r in alpha if r.status == 429]
    good = (all(r.status == 200 for r in beta) and 4 <= ok_a <= allowed + 1 and ok_a + len(limited) == len(alpha)
            and all(r.openai_error() and "retry-after" in {k.lower() for k in r.headers} for r in limited))
    rows.append(Row("a key's request rate under 8 concurrent clients (key alpha: 4/s, burst 4; key beta: no limit)",
                    f"{len(rs)} requests in {elapsed:.1f} s",
                    f"alpha: {statuses(alpha)} (at most {allowed:.0f} allowed), 429s with Retry-After; "
                    f"beta: {statuses(beta)}", None, None, good))
    dbg_none = await _get(session, f"{stack.url}/debug/endpoints")
    dbg_client = await _get(session, f"{stack.url}/debug/endpoints", _bearer("sk-beta"))
    dbg_admin = await _get(session, f"{stack.url}/debug/endpoints", _bearer(ADMIN_KEY))
    metrics_main = await _get(session, f"{stack.url}/metrics", _bearer(ADMIN_KEY))
    metrics_own = await _get(session, f"{stack.metrics_base}/metrics")
    ok = (dbg_none.status == 401 and dbg_client.status == 401 and dbg_admin.status == 200
          and metrics_main.status == 404 and metrics_own.status == 200)
    rows.append(Row("admin routes and metrics with auth on", "/debug/endpoints without key, with a client key, "
                    "with the admin key; /metrics", f"{dbg_none.status}, {dbg_client.status}, {dbg_admin.status}; "
                    f"/metrics: {metrics_main.status} on the client port, {metrics_own.status} on its own port",
                    None, None, ok))
    return rows


async def keyless_priority(session: aiohttp.ClientSession, stack: Stack) -> Row:
    """One dispatch slot, held by a long request: a keyless `objective: 999999` must queue behind an earlier
    plain request (open mode caps it at 0), and `-1` goes last."""
    hold = asyncio.create_task(post(session, stack.url, completion("hold the slot", 300)))
    await asyncio.sleep(0.3)  # the long request has the slot (it runs ~2 s on the replica)
    done: list[str] = []

    async def queued(name: str, objective: str | None) -> Result:
        r = await post(session, stack.url, completion(f"queued {name}", 2),
                       headers={"x-gateway-inference-objective": objective} if objective else {})
        done.append(name)
        return r

    tasks = []
    for name, objective in (("low -1", "-1"), ("plain", None), ("spoofed 999999", "999999")):
        tasks.append(asyncio.create_task(queued(name, objective)))
        await asyncio.sleep(0.1)  # arrival order
    rs = await asyncio.gather(hold, *tasks)
    want = ["plain", "spoofed 999999", "low -1"]
    return Row("priority spoofing without a key: `x-gateway-inference-objective: 999999`",
               "flowcontrol.max_concurrency=1, a request holding the slot, 3 queued",
               f"{statuses(rs)}; dispatch order: {', '.join(done)}", sum(r.status != 200 for r in rs), None,
               done == want and all(r.status == 200 for r in rs))


async def graceful_shutdown(session: aiohttp.ClientSession, stack: Stack) -> Row:
    """SIGTERM while streams run: readiness off, new requests 503, the streams finish, exit 0."""
    streams = [asyncio.create_task(stream(session, stack.url, 300)) for _ in range(3)]
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    stack.gateway.signal(signal.SIGTERM)
    try:
        ready_off = await wait_status(session, f"{stack.url}/ready", 503, 10)  # the signal is handled async
    except TimeoutError:
        ready_off = None
    refused = await post(session, stack.url, completion("too late", 2))
    ss = await asyncio.gather(*streams)
    assert stack.gateway.popen is not None
    code = await asyncio.to_thread(stack.gateway.popen.wait, 60)
    took = time.monotonic() - t0
    ok = (ready_off is not None and refused.status == 503 and refused.openai_error()
          and all(r.status == 200 for r in ss) and code == 0)
    return Row("graceful shutdown: SIGTERM with 3 streams running", "SIGTERM",
               f"/ready 503 after {ready_off if ready_off is not None else float('nan'):.2f} s; a new request "
               f"{refused.status}; streams: {statuses(ss)} "
               f"(complete, [DONE]); exit code {code} after {took:.1f} s", sum(r.status != 200 for r in ss), None, ok)


# -- driver ----------------------------------------------------------------------------------------------------


Scenario = Callable[[aiohttp.ClientSession, Stack], Awaitable[Row | list[Row]]]


async def run(args: argparse.Namespace) -> list[Row]:
    logdir = Path(tempfile.mkdtemp(prefix="lanterna-reliability-"))
    rows: list[Row] = []
    # (name, scenario, gateway arguments given the log directory)
    scenarios: list[tuple[str, Scenario, Callable[[Path], list[str]]]] = [
        ("poison", poison_utf8, _no_args), ("bodies", hostile_bodies, _no_args), ("heads", headers_and_routes, _no_args),
        ("probe", probe_disconnect, _no_args), ("stall", stall, _no_args), ("all_stall", all_stall, _no_args),
        ("mid_stream", killed_mid_stream, _no_args), ("all_down", all_down, _no_args), ("slow", slow_clients, _no_args),
        ("priority", keyless_priority, lambda _: ["--set", "flowcontrol.max_concurrency=1"]),
        ("auth", auth, auth_args), ("shutdown", graceful_shutdown, _no_args),
    ]
    only = set(args.only.split(",")) if args.only else None
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, auto_decompress=False) as session:
        for name, fn, gw_args in scenarios:
            if only and name not in only:
                continue
            stack = Stack(logdir, gateway_args=gw_args(logdir))
            print(f"[{name}] starting stack ...", file=sys.stderr, flush=True)
            try:
                await stack.start(session)
                out = await asyncio.wait_for(fn(session, stack), args.scenario_timeout)
            except Exception as exc:  # a broken scenario is a row, not a crash
                out = Row(name, "-", f"scenario failed: {exc!r}", None, None, False)
            finally:
                stack.stop()
            for row in out if isinstance(out, list) else [out]:
                print(f"[{name}] {'PASS' if row.ok else 'FAIL'}: {row.scenario}: {row.observed}", file=sys.stderr)
                rows.append(row)
        if not only or "spoof" in only:
            row = await spoofed_headers(session, logdir)
            print(f"[spoof] {'PASS' if row.ok else 'FAIL'}: {row.observed}", file=sys.stderr)
            rows.append(row)
    print(f"logs: {logdir}", file=sys.stderr)
    return rows


def _no_args(_: Path) -> list[str]:
    return []


def markdown(rows: list[Row]) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f} s"

    lines = ["| # | fault or hostile input | injected | observed | requests lost | recovery | ok |",
             "|---:|---|---|---|---:|---:|:-:|"]
    for i, r in enumerate(rows, 1):
        lost = "-" if r.lost is None else str(r.lost)
        lines.append(f"| {i} | {r.scenario} | {r.injected} | {r.observed} | {lost} | {f(r.recovery_s)} | "
                     f"{'yes' if r.ok else '**no**'} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated scenario names (poison, bodies, heads, probe, stall, "
                                                "all_stall, mid_stream, all_down, slow, priority, auth, shutdown, spoof)")
    ap.add_argument("--scenario-timeout", type=float, default=240.0)
    ap.add_argument("--no-write", action="store_true", help="print only; do not rewrite the doc and JSON")
    args = ap.parse_args()
    rows = asyncio.run(run(args))
    table = markdown(rows)
    print(table)
    if not args.no_write and not args.only:
        OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
        OUT_JSON.write_text(json.dumps({"benchmark": "reliability", "rows": [asdict(r) for r in rows]}, indent=2))
        doc = OUT_MD.read_text() if OUT_MD.exists() else ""
        start, end = "<!-- table:start -->", "<!-- table:end -->"
        if start in doc and end in doc:
            doc = doc.split(start)[0] + start + "\n" + table + "\n" + end + doc.split(end, 1)[1]
            OUT_MD.write_text(doc)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
