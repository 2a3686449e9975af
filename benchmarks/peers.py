"""Start the processes the gateway-overhead benchmark compares: fake backends, Lanterna, vllm-router, smg.

Also runnable: ``python benchmarks/peers.py fake-backend --port 8001`` serves a minimal vLLM-shaped fake
(``/v1/completions`` and ``/v1/chat/completions``, streaming or not, ``/health``, ``/v1/models``, ``/metrics``).
A prompt starting with ``SLOW`` streams its tokens ``--slow-token-ms`` apart (long-lived streams for the
2,000-concurrent-streams check); every other request answers at once, so what is measured is the router.
Peers are installed by ``scripts/setup_peers.sh`` into ``.venv-peers``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEERS_BIN = REPO / ".venv-peers" / "bin"
MODEL = "fake-model"


@dataclass(slots=True)
class Proc:
    """A started process and the URL it serves."""

    name: str
    url: str
    popen: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid


def spawn(name: str, cmd: list[str], url: str, logdir: Path, env: dict[str, str] | None = None) -> Proc:
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"{name}.log"
    with open(log, "wb") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                             start_new_session=True)
    return Proc(name, url, p, log)


def wait_healthy(proc: Proc, path: str = "/health", timeout_s: float = 30.0) -> bool:
    """Poll ``path`` until 200 or the deadline; False if the process died or never became healthy."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(proc.url + path, timeout=1.0) as r:
                if r.status == 200:
                    return True
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(delay)  # a synchronous launcher: nothing else to await here
        delay = min(0.2, delay * 1.5)
    return False


def stop(proc: Proc) -> None:
    if proc.popen.poll() is None:
        try:
            os.killpg(proc.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.popen.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(5)


def fake_backend(port: int, logdir: Path, slow_token_ms: float) -> Proc:
    cmd = [sys.executable, __file__, "fake-backend", "--port", str(port), "--slow-token-ms", str(slow_token_ms)]
    return spawn(f"backend-{port}", cmd, f"http://127.0.0.1:{port}", logdir)


def lanterna_gateway(port: int, backends: list[str], logdir: Path, extra: list[str]) -> Proc:
    cmd = [sys.executable, "-m", "lanterna.cli.main", "gateway", "--host", "127.0.0.1", "--port", str(port)]
    for b in backends:
        cmd += ["--endpoint", b.removeprefix("http://")]
    return spawn("lanterna", cmd + extra, f"http://127.0.0.1:{port}", logdir)


def vllm_router(port: int, backends: list[str], logdir: Path, policy: str, prom_port: int) -> Proc:
    cmd = [str(PEERS_BIN / "vllm-router"), "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *backends,
           "--policy", policy, "--prometheus-host", "127.0.0.1", "--prometheus-port", str(prom_port),
           "--log-level", "warning"]
    return spawn(f"vllm-router-{policy}", cmd, f"http://127.0.0.1:{port}", logdir)


def smg(port: int, backends: list[str], logdir: Path, policy: str, prom_port: int) -> Proc:
    cmd = [str(PEERS_BIN / "smg"), "launch", "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *backends,
           "--policy", policy, "--prometheus-host", "127.0.0.1", "--prometheus-port", str(prom_port),
           "--log-level", "warn"]
    return spawn(f"smg-{policy}", cmd, f"http://127.0.0.1:{port}", logdir)


# -- /proc accounting (Linux) -----------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                continue
    return out


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def cpu_s(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / tick


def rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


# -- the fake backend -----------------------------------------------------------------------------------------------


def serve_fake_backend(port: int, slow_token_ms: float) -> None:
    from aiohttp import web

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    def chunk(rid: str, chat: bool, text: str, finish: str | None) -> bytes:
        if chat:
            choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish}
            obj = "text_completion"
        body = {"id": rid, "object": obj, "created": 0, "model": MODEL, "choices": [choice]}
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    counter = iter(range(1 << 62))

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        chat = request.path.endswith("/chat/completions")
        n = int(body.get("max_tokens") or body.get("max_completion_tokens") or 4)
        prompt = body.get("prompt") if not chat else (body.get("messages") or [{}])[-1].get("content", "")
        slow = isinstance(prompt, str) and prompt.startswith("SLOW")
        rid = f"cmpl-{next(counter)}"
        if not body.get("stream"):
            text = " tok" * n
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                      if chat else {"index": 0, "text": text, "finish_reason": "length"})
            return web.json_response({"id": rid, "object": "chat.completion" if chat else "text_completion",
                                      "created": 0, "model": MODEL, "choices": [choice],
                                      "usage": {"prompt_tokens": 4, "completion_tokens": n, "total_tokens": n + 4}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(n):
            if slow:
                await asyncio.sleep(slow_token_ms / 1000)
            await resp.write(chunk(rid, chat, " tok", "length" if i == n - 1 else None))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="")

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "fake",
                                                              "max_model_len": 4096}]})

    async def metrics(_: web.Request) -> web.Response:
        lbl = f'{{engine="0",model_name="{MODEL}"}}'
        return web.Response(text=f"vllm:num_requests_running{lbl} 0.0\nvllm:num_requests_waiting{lbl} 0.0\n"
                                 f"vllm:kv_cache_usage_perc{lbl} 0.0\n", content_type="text/plain")

    async def info(_: web.Request) -> web.Response:
        return web.json_response({"model_path": MODEL, "tokenizer_path": MODEL, "is_generation": True})

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/health", ok)
    app.router.add_get("/health_generate", ok)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/get_model_info", info)
    app.router.add_get("/get_server_info", info)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    fb = sub.add_parser("fake-backend")
    fb.add_argument("--port", type=int, required=True)
    fb.add_argument("--slow-token-ms", type=float, default=100.0)
    args = ap.parse_args()
    if args.cmd == "fake-backend":
        serve_fake_backend(args.port, args.slow_token_ms)


if __name__ == "__main__":
    main()
