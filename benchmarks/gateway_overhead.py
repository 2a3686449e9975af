"""Gateway overhead: the same load straight to fake replicas and through Lanterna, vllm-router and smg, one run.

    scripts/setup_peers.sh                                  # once: .venv-peers with vllm-router and smg
    .venv/bin/python benchmarks/gateway_overhead.py         # ~3-5 minutes on 2 cores

Per target and rate (open loop, fixed schedule): latency to first byte and total, p50/p99, added over direct,
achieved vs requested rate, router CPU per request (/proc utime+stime of its process tree / requests). Then the
maximum req/s (closed loop, ``--max-concurrency`` in flight) and ``--streams`` concurrent long streams (errors,
router RSS before/after). Targets are interleaved per rate so drift on a shared machine hits all alike.
Writes ``benchmarks/results/gateway_overhead.json``. Issue targets: added p50 <= 1 ms and p99 <= 5 ms at
500 req/s, <= 0.8 ms CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import peers  # noqa: E402
from tests.conftest import free_port  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "gateway_overhead.json"


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def body(prompt: str, max_tokens: int) -> bytes:
    return json.dumps({"model": peers.MODEL, "prompt": prompt, "max_tokens": max_tokens, "stream": True}).encode()


HEADERS = {"Content-Type": "application/json"}


async def one(session: aiohttp.ClientSession, url: str, payload: bytes) -> tuple[float, float, str]:
    """(ttfb_s, total_s, "ok" | error); a stream counts as ok only if it ends with [DONE]."""
    t = time.perf_counter()
    try:
        async with session.post(url, data=payload, headers=HEADERS) as r:
            if r.status != 200:
                await r.read()
                return 0.0, 0.0, f"http_{r.status}"
            first = 0.0
            tail = b""
            async for chunk in r.content.iter_any():
                if not first:
                    first = time.perf_counter() - t
                tail = (tail + chunk)[-32:]
            if b"[DONE]" not in tail:
                return 0.0, 0.0, "truncated"
            return first, time.perf_counter() - t, "ok"
    except Exception as exc:  # noqa: BLE001 - every failure is a counted error
        return 0.0, 0.0, type(exc).__name__


async def open_loop(session: aiohttp.ClientSession, urls: list[str], rate: float, duration: float,
                    payload: bytes) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    n = max(1, int(rate * duration))
    t0 = loop.time() + 0.02
    tasks = []
    for i in range(n):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(session, urls[i % len(urls)], payload)))
    send_span = loop.time() - t0
    res = await asyncio.gather(*tasks)
    ok = [r for r in res if r[2] == "ok"]
    errors: dict[str, int] = {}
    for r in res:
        if r[2] != "ok":
            errors[r[2]] = errors.get(r[2], 0) + 1
    ttfb = [r[0] * 1e3 for r in ok]
    total = [r[1] * 1e3 for r in ok]
    return {
        "requested_rps": rate, "achieved_rps": n / max(send_span + 1 / rate, 1e-9), "requests": n,
        "errors": errors, "ttfb_p50_ms": pct(ttfb, 0.5), "ttfb_p99_ms": pct(ttfb, 0.99),
        "p50_ms": pct(total, 0.5), "p99_ms": pct(total, 0.99),
    }


async def closed_loop(session: aiohttp.ClientSession, urls: list[str], conc: int, duration: float,
                      payload: bytes) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    done = errs = 0

    async def worker(w: int) -> None:
        nonlocal done, errs
        i = w
        while loop.time() < end:
            _, _, status = await one(session, urls[i % len(urls)], payload)
            i += 1
            if status == "ok":
                done += 1
            else:
                errs += 1

    t0 = loop.time()
    await asyncio.gather(*(worker(w) for w in range(conc)))
    return {"max_rps": done / (loop.time() - t0), "errors": errs}


async def streams(session: aiohttp.ClientSession, urls: list[str], n: int, payload: bytes) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = await asyncio.gather(*(one(session, urls[i % len(urls)], payload) for i in range(n)))
    errors: dict[str, int] = {}
    for r in res:
        if r[2] != "ok":
            errors[r[2]] = errors.get(r[2], 0) + 1
    return {"streams": n, "errors": sum(errors.values()), "error_kinds": errors,
            "seconds": time.perf_counter() - t0, "total_p99_ms": pct([r[1] * 1e3 for r in res if r[2] == "ok"], 0.99)}


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each figure over the rounds (a shared machine's hiccup hits one round), plus the spread."""
    out: dict[str, Any] = {"rounds": len(rounds), "requests": sum(r["requests"] for r in rounds), "errors": {}}
    for r in rounds:
        for k, n in r["errors"].items():
            out["errors"][k] = out["errors"].get(k, 0) + n
    for key, val in rounds[0].items():
        if isinstance(val, float) and key != "requested_rps":
            xs = sorted(r[key] for r in rounds)
            out[key] = xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
            if key in ("p50_ms", "p99_ms", "cpu_ms_per_req", "cpu_ms_per_req_net"):
                out[key + "_spread"] = [xs[0], xs[-1]]
    out["requested_rps"] = rounds[0]["requested_rps"]
    return out


def start_targets(args: argparse.Namespace, backends: list[str], logdir: Path) -> dict[str, peers.Proc | None]:
    """Start every router at once (they idle while others are measured); None marks one that did not come up."""
    procs: dict[str, peers.Proc | None] = {}
    wanted = args.targets.split(",")
    starters = []
    hosts = [b.removeprefix("http://") for b in backends]

    def custom(name: str, template: str) -> None:
        port = free_port()
        cmd = shlex.split(template.format(port=port, python=sys.executable, endpoints=" ".join(hosts),
                                          endpoint_flags=" ".join(f"--endpoint {h}" for h in hosts)))
        starters.append((name, peers.spawn(name, cmd, f"http://127.0.0.1:{port}", logdir)))

    if "lanterna" in wanted:
        if args.lanterna_cmd:
            custom("lanterna", args.lanterna_cmd)
        else:
            starters.append(("lanterna", peers.lanterna_gateway(free_port(), backends, logdir,
                                                                shlex.split(args.lanterna_args))))
    for spec in args.variant:  # other Lanterna builds measured side by side (e.g. before/after a change)
        name, _, template = spec.partition("=")
        custom(name, template)
    for name, fn in (("vllm-router", peers.vllm_router), ("smg", peers.smg)):
        if name in wanted:
            exe = peers.PEERS_BIN / name
            if not exe.exists():
                print(f"[skip] {name}: {exe} missing; run scripts/setup_peers.sh", file=sys.stderr)
                procs[name] = None
                continue
            starters.append((name, fn(free_port(), backends, logdir, args.policy, free_port())))
    for name, proc in starters:
        healthy = peers.wait_healthy(proc, "/health", args.startup_timeout)
        if not healthy:
            print(f"[skip] {name}: not healthy; see {proc.log}", file=sys.stderr)
            peers.stop(proc)
        procs[name] = proc if healthy else None
    return procs


async def measure(args: argparse.Namespace, backends: list[str], procs: dict[str, peers.Proc | None]) -> dict[str, Any]:
    targets: dict[str, list[str]] = {"direct": [f"{b}/v1/completions" for b in backends]}
    for name, proc in procs.items():
        if proc is not None:
            targets[name] = [f"{proc.url}/v1/completions"]
    pids = {name: peers.tree(proc.pid) for name, proc in procs.items() if proc is not None}
    fast = body("hello world", args.max_tokens)
    slow = body("SLOW stream", args.stream_tokens)
    conn = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    out: dict[str, Any] = {t: {"rates": {}} for t in targets}
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as session:
        for urls in targets.values():  # warm up connections and caches
            await open_loop(session, urls, 200, 1.0, fast)
        idle_cpu: dict[str, float] = {}  # router CPU-s per s while idle (pollers), measured during "direct"
        rounds: dict[str, dict[str, list[dict[str, Any]]]] = {t: {} for t in targets}
        routers = [t for t in targets if t != "direct"]
        for i, rate in enumerate([r for _ in range(args.repeat) for r in args.rates]):
            # direct first (it also measures idle CPU), then the routers in an order rotated every round:
            # the first one measured after an idle spell ran measurably hotter (A/A: +0.05 ms/req)
            k = (i // len(args.rates)) % max(1, len(routers))
            for t in ["direct", *routers[k:], *routers[:k]]:
                urls = targets[t]
                c0 = peers.cpu_s(pids[t]) if t in pids else 0.0
                if t == "direct":
                    idle0 = {n: peers.cpu_s(p) for n, p in pids.items()}
                    w0 = time.perf_counter()
                r = await open_loop(session, urls, rate, args.duration, fast)
                if t == "direct":
                    span = time.perf_counter() - w0
                    idle_cpu = {n: (peers.cpu_s(p) - idle0[n]) / span for n, p in pids.items()}
                if t in pids:
                    used = peers.cpu_s(pids[t]) - c0
                    r["cpu_ms_per_req"] = used * 1e3 / r["requests"]
                    r["idle_cpu_pct"] = idle_cpu.get(t, 0.0) * 100
                    # net: minus what the router burns idle (scrapes, health checks) over the same span
                    r["cpu_ms_per_req_net"] = max(0.0, used - idle_cpu.get(t, 0.0) * args.duration) * 1e3 / r["requests"]
                rounds[t].setdefault(str(rate), []).append(r)
                print(f"  {t:12s} {rate:6.0f} req/s  achieved {r['achieved_rps']:7.1f}  p50 {r['p50_ms']:7.2f} ms"
                      f"  p99 {r['p99_ms']:7.2f} ms  errors {sum(r['errors'].values())}"
                      + (f"  cpu {r['cpu_ms_per_req']:.3f} ms/req (net of idle {r['cpu_ms_per_req_net']:.3f})"
                         if "cpu_ms_per_req" in r else ""), flush=True)
        for t in targets:
            out[t]["rates"] = {k: summarize(v) for k, v in rounds[t].items()}
        for t, urls in targets.items():
            c0 = peers.cpu_s(pids[t]) if t in pids else 0.0
            r = await closed_loop(session, urls, args.max_concurrency, args.max_duration, fast)
            if t in pids and r["max_rps"]:
                r["cpu_ms_per_req"] = (peers.cpu_s(pids[t]) - c0) * 1e3 / (r["max_rps"] * args.max_duration)
            out[t]["max"] = r
            print(f"  {t:12s} max {r['max_rps']:7.1f} req/s (closed loop, {args.max_concurrency} in flight)", flush=True)
        for t, urls in targets.items():
            rss0 = peers.rss_mb(peers.tree(procs[t].pid)) if t in pids and procs[t] else 0.0  # type: ignore[union-attr]
            r = await streams(session, urls, args.streams, slow)
            if t in pids:
                r["rss_before_mb"] = rss0
                r["rss_after_mb"] = peers.rss_mb(peers.tree(procs[t].pid))  # type: ignore[union-attr]
            out[t]["streams"] = r
            print(f"  {t:12s} {args.streams} streams: errors {r['errors']} in {r['seconds']:.1f} s"
                  + (f"  rss {r['rss_before_mb']:.0f} -> {r['rss_after_mb']:.0f} MB" if "rss_before_mb" in r else ""),
                  flush=True)
    return out


def table(res: dict[str, Any], rates: list[float]) -> None:
    direct = res["direct"]["rates"]
    print("\nadded latency over direct (ms, total time), CPU per request, max req/s, streams")
    hdr = ("target        " + "".join(f"  {int(r):>5}/s p50   p99" for r in rates)
           + "   cpu@500 (net) ms/req  max r/s  streams err")
    print(hdr)
    for t, d in res.items():
        cells = ""
        for r in rates:
            x = d["rates"][str(r)]
            base = direct[str(r)]
            cells += f"  {x['p50_ms'] - base['p50_ms']:+11.2f} {x['p99_ms'] - base['p99_ms']:+5.2f}"
        mid = d["rates"].get("500.0", d["rates"].get(str(rates[len(rates) // 2]), {}))
        cpu, net = mid.get("cpu_ms_per_req", float("nan")), mid.get("cpu_ms_per_req_net", float("nan"))
        print(f"{t:14s}{cells}   {cpu:7.3f} ({net:5.3f})       {d['max']['max_rps']:7.0f}"
              f"  {d['streams']['errors']:>11}")
    if "lanterna" in res:
        lt = res["lanterna"]
        print("\nratios lanterna / peer (added p50, added p99, net cpu/req at each rate; max req/s)")
        for peer in (p for p in res if p not in ("direct", "lanterna")):
            pd = res[peer]
            for r in rates:
                k = str(r)
                a = [lt["rates"][k][m] - direct[k][m] for m in ("p50_ms", "p99_ms")]
                b = [pd["rates"][k][m] - direct[k][m] for m in ("p50_ms", "p99_ms")]
                ca, cb = lt["rates"][k].get("cpu_ms_per_req_net"), pd["rates"][k].get("cpu_ms_per_req_net")
                # a peer whose added latency is within noise (< 0.05 ms, or negative) gives no meaningful ratio
                print(f"  vs {peer:12s} {int(r):5d}/s  p50 x{a[0] / b[0] if b[0] > 0.05 else float('nan'):.2f}"
                      f"  p99 x{a[1] / b[1] if b[1] > 0.05 else float('nan'):.2f}"
                      f"  cpu x{(ca / cb) if ca and cb else float('nan'):.2f}")
            print(f"  vs {peer:12s} max req/s x{lt['max']['max_rps'] / max(pd['max']['max_rps'], 1e-9):.2f}")


def markdown(res: dict[str, Any], rates: list[float]) -> str:
    """The README's table: medians over the rounds, [min-max] over the rounds in brackets. Added latency is
    the target's median minus direct's median at the same rate (both measured in every round)."""
    direct = res["direct"]["rates"]
    cols = "".join(f" | {int(r)}/s added p50 / p99 ms" for r in rates)
    out = [f"| target{cols} | CPU ms/req @500 | max req/s |", "|---" * (len(rates) + 3) + "|"]
    for t, d in res.items():
        if t == "direct":
            continue
        cells = ""
        for r in rates:
            x, base = d["rates"][str(r)], direct[str(r)]
            lo50, hi50 = x["p50_ms_spread"]
            lo99, hi99 = x["p99_ms_spread"]
            cells += (f" | {x['p50_ms'] - base['p50_ms']:+.2f} [{lo50:.2f}-{hi50:.2f}] / "
                      f"{x['p99_ms'] - base['p99_ms']:+.2f} [{lo99:.1f}-{hi99:.1f}]")
        mid = d["rates"].get("500.0", {})
        cpu = (f"{mid['cpu_ms_per_req']:.3f} [{mid['cpu_ms_per_req_spread'][0]:.3f}-"
               f"{mid['cpu_ms_per_req_spread'][1]:.3f}]" if "cpu_ms_per_req_spread" in mid
               else f"{mid['cpu_ms_per_req']:.3f}" if "cpu_ms_per_req" in mid else "-")
        out.append(f"| {t}{cells} | {cpu} | {d['max']['max_rps']:.0f} |")
    out.append("\ndirect (no router) medians: " + ", ".join(
        f"{int(r)}/s p50 {direct[str(r)]['p50_ms']:.2f} / p99 {direct[str(r)]['p99_ms']:.2f} ms" for r in rates)
        + f"; max {res['direct']['max']['max_rps']:.0f} req/s. Brackets: raw latency (not added) and CPU, "
        "min-max over the rounds.")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="100,500,1000", help="open-loop req/s, comma-separated")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per (target, rate, round)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds over all rates; figures are medians")
    ap.add_argument("--backends", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=4, help="tokens per normal (instant) stream")
    ap.add_argument("--max-concurrency", type=int, default=64, help="closed-loop in-flight for max req/s")
    ap.add_argument("--max-duration", type=float, default=6.0)
    ap.add_argument("--streams", type=int, default=2000)
    ap.add_argument("--stream-tokens", type=int, default=20)
    ap.add_argument("--slow-token-ms", type=float, default=100.0, help="gap between tokens of a long stream")
    ap.add_argument("--targets", default="lanterna,vllm-router,smg")
    ap.add_argument("--policy", default="round_robin", help="peer routing policy (round_robin, cache_aware)")
    ap.add_argument("--lanterna-args", default="", help="extra flags for `lanterna gateway`")
    ap.add_argument("--lanterna-cmd", default="",
                    help="full command; placeholders {python} {port} {endpoints} {endpoint_flags}")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=CMD",
                    help="another target started by CMD (same placeholders), e.g. the code before a change")
    ap.add_argument("--startup-timeout", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    logdir = Path(tempfile.mkdtemp(prefix="lanterna-overhead-"))
    started: list[peers.Proc] = []
    try:
        ports = [free_port() for _ in range(args.backends)]
        bprocs = [peers.fake_backend(p, logdir, args.slow_token_ms) for p in ports]
        started += bprocs
        for b in bprocs:
            if not peers.wait_healthy(b, "/health", args.startup_timeout):
                print(f"backend failed to start; see {b.log}", file=sys.stderr)
                return 1
        backends = [b.url for b in bprocs]
        procs = start_targets(args, backends, logdir)
        started += [p for p in procs.values() if p is not None]
        print(f"targets up: {[k for k, v in procs.items() if v]}; logs in {logdir}", flush=True)
        res = asyncio.run(measure(args, backends, procs))
    finally:
        for p in reversed(started):
            peers.stop(p)
    table(res, args.rates)
    report = {
        "benchmark": "gateway_overhead",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "backend": "fake (benchmarks/peers.py fake-backend)"},
        "unavailable": [k for k, v in procs.items() if v is None],
        "results": res,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    md = markdown(res, args.rates)
    args.out.with_suffix(".md").write_text(md)
    print("\n" + md + f"\nwrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
