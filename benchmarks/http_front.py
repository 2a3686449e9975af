"""What the HTTP server itself costs: CPU per request of the gateway's two servers on a trivial route, beside a
minimal aiohttp app and a minimal httptools server (the floors).

    .venv/bin/python benchmarks/http_front.py [--rate 500] [--duration 6] [--repeat 3]

Targets, each its own process, measured in interleaved rounds (medians; CPU from /proc of the server process):
  aiohttp-min     a one-route aiohttp app (uvloop): aiohttp's floor
  httptools-min   a one-route httptools protocol (uvloop): the framing floor
  gateway-lean    ``lanterna gateway`` (lean front, the default) answering ``GET /health``
  gateway-aiohttp the same with ``--set gateway.http_server=aiohttp``
``/health`` runs the server's request path without the routing core, so the difference between the two gateway
rows is the server. Prints figures and ratios; asserts nothing. Measured (2-core VM, 500 req/s, one round, access
log off): aiohttp-min 0.160, httptools-min 0.053, gateway-lean 0.127, gateway-aiohttp 0.180 ms CPU per request
(lean x0.70 of aiohttp; of lean's 0.127, ~0.01 is the pollers' idle cost, ~0.03 its request objects, id, head). The full router comparison (routing core included,
vllm-router and smg beside) is ``benchmarks/gateway_overhead.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import peers  # noqa: E402

AIOHTTP_MIN = r"""
import sys, uvloop
from aiohttp import web
BODY = b'{"status":"ok","ready_endpoints":1}'
async def h(req):
    return web.Response(body=BODY, content_type="application/json")
app = web.Application(); app.router.add_get("/health", h)
uvloop.install(); web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

HTTPTOOLS_MIN = r"""
import sys, asyncio, uvloop, httptools
BODY = b'{"status":"ok","ready_endpoints":1}'
RESP = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY
class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t; self.p = httptools.HttpRequestParser(self); self.hdrs = []
    def on_header(self, k, v): self.hdrs.append((k, v))
    def on_message_complete(self):
        asyncio.get_running_loop().create_task(self.handle())
    async def handle(self):
        self.t.write(RESP); self.hdrs = []
    def data_received(self, d): self.p.feed_data(d)
async def main():
    await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1])); await asyncio.Event().wait()
uvloop.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def open_loop(url: str, rate: float, duration: float) -> tuple[int, int]:
    """GETs at ``rate``/s for ``duration`` s; (sent, errors)."""
    errors = 0

    async def one(s: aiohttp.ClientSession) -> None:
        nonlocal errors
        try:
            async with s.get(url) as r:
                await r.read()
                errors += r.status != 200
        except aiohttp.ClientError:
            errors += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        for _ in range(100):  # warm the connection pool
            await one(s)
        errors = 0
        n = int(rate * duration)
        t0 = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(s)))
        await asyncio.gather(*tasks)
    return n, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    logdir = Path(tempfile.mkdtemp(prefix="lanterna-http-front-"))
    backend = peers.fake_backend(free_port(), logdir, 100.0)
    procs: dict[str, peers.Proc] = {}
    try:
        assert peers.wait_healthy(backend), f"backend did not start; see {backend.log}"
        for name, code in (("aiohttp-min", AIOHTTP_MIN), ("httptools-min", HTTPTOOLS_MIN)):
            port = free_port()
            procs[name] = peers.spawn(name, [sys.executable, "-c", code, str(port)], f"http://127.0.0.1:{port}", logdir)
        for name, extra in (("gateway-lean", []), ("gateway-aiohttp", ["--set", "gateway.http_server=aiohttp"])):
            procs[name] = peers.lanterna_gateway(free_port(), [backend.url], logdir,
                                                 ["--set", "gateway.access_log=off", *extra])
        for name, p in procs.items():
            assert peers.wait_healthy(p), f"{name} did not start; see {p.log}"
        cpu: dict[str, list[float]] = {name: [] for name in procs}
        for rnd in range(args.repeat):
            for name, p in procs.items():
                c0 = peers.cpu_s([p.pid])
                n, errors = asyncio.run(open_loop(p.url + "/health", args.rate, args.duration))
                per = 1e3 * (peers.cpu_s([p.pid]) - c0) / n
                cpu[name].append(per)
                print(f"  round {rnd + 1}/{args.repeat} {name:16s} {n} requests, {errors} errors, "
                      f"cpu {per:.3f} ms/req", flush=True)
        med = {name: statistics.median(xs) for name, xs in cpu.items()}
        print(f"\nCPU per request at {args.rate:g} req/s (median of {args.repeat}; min-max)")
        for name, xs in cpu.items():
            print(f"  {name:16s} {med[name]:.3f} ms  [{min(xs):.3f}-{max(xs):.3f}]")
        print("ratios")
        print(f"  gateway-lean / gateway-aiohttp  x{med['gateway-lean'] / med['gateway-aiohttp']:.2f}")
        print(f"  httptools-min / aiohttp-min     x{med['httptools-min'] / med['aiohttp-min']:.2f}")
        print(f"  gateway-lean / httptools-min    x{med['gateway-lean'] / med['httptools-min']:.2f}")
    finally:
        for p in [*procs.values(), backend]:
            peers.stop(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
