"""Gateway hot-path figures: per-request parsing, /metrics parsing, load accounting, and end-to-end
gateway CPU per request and added latency against a minimal fake backend (all on this machine).

    .venv/bin/python benchmarks/gateway_hotpath.py [--requests 3000] [--concurrency 16] [--stream]
    .venv/bin/python benchmarks/gateway_hotpath.py --client-only --compare-upstream before=OLD/upstream.py
    .venv/bin/python benchmarks/gateway_hotpath.py --e2e-only --gateway before=OLD/src --e2e-rounds 5
        [--gateway 'llmd=this --scheduler-config llm-d']

Prints figures and ratios; asserts nothing. The full comparison against peer routers at fixed rates is
benchmarks/gateway_overhead.py (flow-control part); this script isolates the gateway's own costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from lanterna.endpoints.scrape import parse_metrics  # noqa: E402
from lanterna.endpoints.types import Endpoint, EndpointMetrics  # noqa: E402
from lanterna.routing.accounting import LoadTicket  # noqa: E402
from lanterna.routing.fields import parse_body, prompt_text  # noqa: E402

FAKE_BACKEND = r"""
import asyncio, sys, uvloop
from aiohttp import web
BODY = b'{"id":"cmpl-1","object":"text_completion","model":"m","choices":[{"index":0,"text":"hi","finish_reason":"length"}],"usage":{"prompt_tokens":8,"completion_tokens":2,"total_tokens":10}}'
CHUNK = b'data: {"id":"cmpl-1","choices":[{"index":0,"text":"x"}]}\n\n'
async def infer(request):
    data = await request.read()
    if b'"stream":true' in data or b'"stream": true' in data:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(8):
            await resp.write(CHUNK)
        await resp.write(b"data: [DONE]\n\n")
        return resp
    return web.Response(body=BODY, content_type="application/json")
async def models(request):
    return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})
async def ok(request):
    return web.Response(text="")
app = web.Application()
app.router.add_post("/v1/completions", infer)
app.router.add_get("/v1/models", models)
app.router.add_get("/health", ok)
app.router.add_get("/metrics", ok)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench(fn, n: int) -> float:
    """Microseconds per call."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def micro() -> None:
    comp = b'{"model":"m","prompt":"' + b"lorem ipsum " * 200 + b'","max_tokens":128,"temperature":0.7,"stream":true}'
    chat = (b'{"model":"m","messages":[{"role":"system","content":"' + b"be helpful " * 100 + b'"},'
            b'{"role":"user","content":"' + b"question " * 100 + b'"}],"max_tokens":64}')
    text = (Path("/work/shared/reference/vllm-0.32-cpu/metrics.txt")
            if Path("/work/shared/reference/vllm-0.32-cpu/metrics.txt").exists() else None)
    print("micro (per call)")
    print(f"  parse completions body (2.4 KB)   {bench(lambda: prompt_text(parse_body(comp, 'completions'), 'completions'), 20000):7.2f} us")
    print(f"  parse chat body (2 KB)            {bench(lambda: prompt_text(parse_body(chat, 'chat'), 'chat'), 20000):7.2f} us")
    ep = Endpoint("a", "a:1")

    def ticket() -> None:
        t = LoadTicket(ep, 100, 16)
        t.first_token()
        t.release()

    print(f"  load ticket acquire+first+release {bench(ticket, 100000):7.2f} us")
    if text is not None:
        body = text.read_text()
        ours = bench(lambda: parse_metrics(body, EndpointMetrics(), 0.0), 300)
        from prometheus_client.parser import text_string_to_metric_families

        def full() -> None:
            for _ in text_string_to_metric_families(body.split("\n\n", 1)[-1] if body.startswith("HTTP") else body):
                pass

        try:
            theirs = bench(full, 30)
            print(f"  parse vLLM /metrics ({len(body) // 1024} KB)       {ours:7.1f} us  "
                  f"(prometheus_client parser {theirs:.0f} us, {theirs / ours:.1f}x slower)")
        except Exception:
            print(f"  parse vLLM /metrics ({len(body) // 1024} KB)       {ours:7.1f} us")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def drive(url: str, n: int, conc: int, stream: bool) -> list[float]:
    body = b'{"model":"m","prompt":"hello world","max_tokens":2' + (b',"stream":true}' if stream else b"}")
    lat: list[float] = []
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        left = n

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                async with s.post(url + "/v1/completions", data=body,
                                  headers={"content-type": "application/json"}) as r:
                    await r.read()
                    assert r.status == 200, r.status
                lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(conc)))
    return sorted(lat)


def _load_upstreams(path: str) -> type:
    """``Upstreams`` from another version of gateway/upstream.py (a before/after comparison)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_upstream_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.Upstreams


async def _client_cpu(bport: int, n: int, rounds: int, others: dict[str, str]) -> dict[str, list[float]]:
    """CPU us per sequential streamed request per client, rounds interleaved (drift hits all alike)."""
    from lanterna.gateway.upstream import Upstreams

    body = b'{"model":"m","prompt":"hello world","max_tokens":2,"stream":true}'
    hdrs = {"content-type": "application/json"}
    url = f"http://127.0.0.1:{bport}/v1/completions"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=4, sock_read=120)
    async with aiohttp.ClientSession() as s:
        async def via_aiohttp() -> None:
            async with s.post(url, data=body, headers=hdrs, timeout=timeout) as r:
                while await r.content.readany():
                    pass

        def lean(cls: type) -> tuple[object, object]:
            up = cls(connect_s=4, idle_s=120)

            async def via() -> None:
                r = await up.post(f"127.0.0.1:{bport}", "/v1/completions", body, hdrs)
                while await r.readany():
                    pass
                r.release()
            return up, via

        clients = {"aiohttp ClientSession": (None, via_aiohttp), "lanterna.gateway.upstream": lean(Upstreams)}
        clients.update({name: lean(_load_upstreams(path)) for name, path in others.items()})
        out: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(rounds):
            for name, (_, fn) in clients.items():
                for _ in range(200):
                    await fn()
                c0 = time.process_time()
                for _ in range(n):
                    await fn()
                out[name].append((time.process_time() - c0) / n * 1e6)
        for up, _ in clients.values():
            if up is not None:
                up.close()
    return out


def upstream_client(n: int, rounds: int, others: dict[str, str]) -> None:
    bport = free_port()
    proc = subprocess.Popen([sys.executable, "-c", FAKE_BACKEND, str(bport)])
    try:
        wait_http(f"http://127.0.0.1:{bport}/health")
        import uvloop

        res = uvloop.run(_client_cpu(bport, n, rounds, others))
        med = {k: sorted(v)[len(v) // 2] for k, v in res.items()}
        base = med["lanterna.gateway.upstream"]
        print(f"upstream client (CPU per streamed request, sequential, {n} requests x {rounds} interleaved rounds, "
              f"client process only; median [all rounds])")
        for name, us in med.items():
            rounds_s = " ".join(f"{x:.0f}" for x in res[name])
            print(f"  {name:<34}{us:7.1f} us  ({us / base:.2f}x of lanterna.gateway.upstream) [{rounds_s}]")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1e3


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def _spread(xs: list[float]) -> str:
    s = sorted(xs)
    return f"{s[len(s) // 2]:.3f} [{s[0]:.3f}-{s[-1]:.3f}]"


def e2e(n: int, conc: int, stream: bool, gateways: dict[str, str | None], rounds: int) -> None:
    """End to end through each gateway build (name -> its ``src`` on PYTHONPATH; None: this checkout), all
    started at once and measured in interleaved rounds so a shared machine's drift hits every build alike.
    The access log (stdout) goes to /dev/null, so no pipe reader paces the gateway."""
    bport = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen([sys.executable, "-c", FAKE_BACKEND, str(bport)]))
        wait_http(f"http://127.0.0.1:{bport}/health")
        gws: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        for name, spec in gateways.items():
            gport = free_port()
            src, *extra = (spec or "this").split()
            env = {**os.environ, "PYTHONPATH": str(REPO / "src") if src == "this" else src}
            gw = subprocess.Popen([sys.executable, "-m", "lanterna.cli.main", "gateway", "--endpoint",
                                   f"127.0.0.1:{bport}", "--model", "m", "--port", str(gport),
                                   "--set", "gateway.log_level=WARNING", *extra], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # stdout: the access log
            procs.append(gw)
            gws[name] = (gw, gport)
        for _, gport in gws.values():
            wait_http(f"http://127.0.0.1:{gport}/health")
        asyncio.run(drive(f"http://127.0.0.1:{bport}", 300, conc, stream))  # warm-up
        for _, gport in gws.values():
            asyncio.run(drive(f"http://127.0.0.1:{gport}", 300, conc, stream))
        res: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "rps": [], "p50": [], "p99": []} for k in gws}
        for _ in range(rounds):
            direct = asyncio.run(drive(f"http://127.0.0.1:{bport}", n, conc, stream))
            for name, (gw, gport) in gws.items():
                c0, t0 = cpu_s(gw.pid), time.perf_counter()
                via = asyncio.run(drive(f"http://127.0.0.1:{gport}", n, conc, stream))
                wall = time.perf_counter() - t0
                r = res[name]
                r["cpu"].append((cpu_s(gw.pid) - c0) / n * 1e3)
                r["rps"].append(n / wall)
                r["p50"].append(pct(via, .5) - pct(direct, .5))
                r["p99"].append(pct(via, .99) - pct(direct, .99))
        kind = "stream" if stream else "non-stream"
        print(f"end to end ({kind}, {n} requests x {rounds} interleaved rounds, concurrency {conc}, fake backend, "
              f"same cores; median [min-max])")
        for name, r in res.items():
            print(f"  {name}")
            print(f"    gateway CPU per request         {_spread(r['cpu'])} ms  (target <= 0.8 ms)")
            print(f"    throughput through gateway      {_spread(r['rps'])} req/s")
            print(f"    added latency p50               {_spread(r['p50'])} ms")
            print(f"    added latency p99               {_spread(r['p99'])} ms")
    finally:
        _stop(procs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--micro-only", action="store_true")
    ap.add_argument("--client-only", action="store_true", help="only the upstream client comparison")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the upstream client comparison")
    ap.add_argument("--gateway", action="append", default=[], metavar="NAME=SRC [ARGS]",
                    help="end to end also through the gateway of another checkout's src dir (before=OLD/src), "
                         "SRC 'this' for this checkout, ARGS added to its command line ('llmd=this "
                         "--scheduler-config llm-d'); this checkout as is is always measured, as 'this'")
    ap.add_argument("--e2e-rounds", type=int, default=1, help="interleaved rounds of the end-to-end measurement")
    ap.add_argument("--e2e-only", action="store_true", help="only the end-to-end measurement")
    ap.add_argument("--compare-upstream", action="append", default=[], metavar="NAME=PATH",
                    help="also measure the Upstreams of another gateway/upstream.py (e.g. the previous version)")
    a = ap.parse_args()
    others = dict(spec.partition("=")[::2] for spec in a.compare_upstream)
    gateways: dict[str, str | None] = {"this": None}
    gateways.update(dict(spec.partition("=")[::2] for spec in a.gateway))
    if a.e2e_only:
        e2e(a.requests, a.concurrency, a.stream, gateways, a.e2e_rounds)
        return
    if a.client_only:
        upstream_client(min(a.requests, 3000), a.rounds, others)
        return
    micro()
    if not a.micro_only:
        upstream_client(min(a.requests, 3000), a.rounds, others)
        e2e(a.requests, a.concurrency, a.stream, gateways, a.e2e_rounds)


if __name__ == "__main__":
    main()
