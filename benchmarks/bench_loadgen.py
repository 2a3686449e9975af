"""Can the HTTP load generator keep a 1,000 req/s schedule on this machine?

Starts a minimal streaming OpenAI-style server in a child process (raw asyncio, 2-token SSE answers, so
the server is not the bottleneck), runs ``lanterna.bench.runner`` at constant and Poisson 1,000 req/s,
and prints achieved vs requested rate and the schedule lag. Usage:

    .venv/bin/python benchmarks/bench_loadgen.py [--rate 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import sys
import time
import urllib.request

_BODY = (b'data: {"choices":[{"index":0,"text":" a","finish_reason":null}]}\n\n'
         b'data: {"choices":[{"index":0,"text":" b","finish_reason":"length"}]}\n\n'
         b'data: {"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":2,"total_tokens":10}}\n\n'
         b"data: [DONE]\n\n")
_RESP = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n" % len(_BODY)) + _BODY


class _Proto(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].lower()
            n = 0
            i = head.find(b"content-length:")
            if i >= 0:
                n = int(head[i + 15:].split(b"\r\n", 1)[0])
            if len(self.buf) < head_end + 4 + n:
                return
            self.buf = self.buf[head_end + 4 + n:]
            if head.startswith(b"get /health"):
                self.t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")  # type: ignore[attr-defined]
            else:
                self.t.write(_RESP)  # type: ignore[attr-defined]


def _serve(port: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(_Proto, "127.0.0.1", port, backlog=4096))
    try:
        loop.run_forever()
    finally:
        server.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("fake server did not come up")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    from lanterna.bench.config import parse_config
    from lanterna.bench.runner import run_http

    port = _free_port()
    proc = mp.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    proc.start()
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url)
        print(f"load generator vs minimal SSE server, {args.rate:g} req/s for {args.seconds:g} s")
        for kind in ("constant", "poisson"):
            cfg = parse_config({
                "workload": {"type": "shared-prefix", "num_groups": 50, "prompts_per_group": 5, "system_len": 200,
                             "question_len": 50, "output_len": 2},
                "load": {"type": kind, "warmup": {"rate": 200, "duration_s": 1},
                         "stages": [{"rate": args.rate, "duration_s": args.seconds}]},
                "target": {"url": url, "model": "m", "timeout_s": 30},
            })
            cpu0 = time.process_time()
            res = run_http(cfg, progress=False)
            cpu = time.process_time() - cpu0
            s = res.stages[0].summary
            lag, achieved = s.schedule_lag_s, s.achieved_rate or 0.0
            assert lag is not None
            print(f"  {kind:8s}: requested {args.rate:,.0f} req/s, achieved {achieved:,.1f} req/s "
                  f"(ratio {achieved / args.rate:.3f}); completed {s.num_completed}/{s.num_requests}, "
                  f"failures {s.failures or 0}; lag p50 {lag.p50 * 1e3:.2f} ms p99 {lag.p99 * 1e3:.2f} ms "
                  f"max {lag.max * 1e3:.1f} ms; generator CPU {cpu:.1f} s "
                  f"({cpu / (args.seconds + 1):.2f} cores); behind schedule: {s.behind_schedule}")
    finally:
        proc.terminate()
        proc.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
