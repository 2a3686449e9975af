"""Failure modes through a real gateway process in front of real ``lanterna sim`` processes.

A stalled replica (a socket that accepts and never answers) must not hang requests: the first-byte
timeout moves each one to a healthy replica. A replica killed mid-stream ends that stream with an
OpenAI error frame, releases its load, and the gateway keeps serving.
"""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.test_gateway_support import run_lanterna
from tests.integration.vllm_server import start_sim

pytestmark = pytest.mark.integration


def _post(url: str, body: dict, timeout: float = 20.0) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read(), dict(r.headers)


def test_stalled_replica_does_not_hang_requests(tiny_model_dir: Path, tmp_path: Path) -> None:
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(64)  # accepts (kernel backlog) and never answers
    stalled_addr = f"127.0.0.1:{stalled.getsockname()[1]}"
    try:
        with start_sim(tiny_model_dir, port=free_port(), extra_args=["--timing", "constant"]) as sim:
            args = ["gateway", "--endpoint", stalled_addr, "--endpoint", f"127.0.0.1:{sim.port}", "--model", "tiny",
                    "--set", "gateway.timeouts.first_byte_s=0.5", "--set", "gateway.circuit_breaker.open_s=60",
                    "--set", "gateway.circuit_breaker.failure_threshold=2",
                    "--set", "endpoints.unhealthy_after=1000"]  # only the first-byte timeout protects us
            with run_lanterna(args, tmp_path) as g:
                served = set()
                for i in range(12):
                    t0 = time.monotonic()
                    status, body, headers = _post(g.url + "/v1/completions",
                                                  {"model": "tiny", "prompt": f"req {i}", "max_tokens": 2})
                    assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 2
                    assert time.monotonic() - t0 < 0.5 + 3.0  # one timeout at most, never a hang
                    served.add(headers["x-gateway-destination-endpoint"])
                assert served == {f"127.0.0.1:{sim.port}"}
                with urllib.request.urlopen(g.url + "/metrics", timeout=5) as r:
                    metrics = r.read().decode()
                timeouts = next((float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(
                    f'lanterna_gateway_upstream_failures_total{{endpoint="{stalled_addr}",reason="timeout"}}')), 0.0)
                assert 1 <= timeouts <= 2  # tried, then the breaker stopped paying the timeout
                if timeouts == 2:
                    assert f'lanterna_gateway_circuit_open{{endpoint="{stalled_addr}"}} 1.0' in metrics
    finally:
        stalled.close()


def test_replica_killed_mid_stream_ends_stream_with_error_frame(tiny_model_dir: Path, tmp_path: Path) -> None:
    with start_sim(tiny_model_dir, port=free_port()) as a, start_sim(tiny_model_dir, port=free_port()) as b:
        by_addr = {f"127.0.0.1:{a.port}": a, f"127.0.0.1:{b.port}": b}
        args = ["gateway", *sum((["--endpoint", k] for k in by_addr), []), "--model", "tiny"]
        with run_lanterna(args, tmp_path, min_ready=2) as g:
            body = {"model": "tiny", "prompt": "a long story", "max_tokens": 1500, "stream": True,
                    "ignore_eos": True}
            req = urllib.request.Request(g.url + "/v1/completions", data=json.dumps(body).encode(),
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                victim = by_addr[r.headers["x-gateway-destination-endpoint"]]
                first = r.readline()
                assert first.startswith(b"data: {")
                load = {e["id"]: e["load"] for e in g.get_json("/debug/endpoints")["endpoints"]}
                assert load[f"127.0.0.1:{victim.port}"]["in_flight_requests"] == 1
                victim.process.send_signal(signal.SIGKILL)
                frames = [ln for ln in r.read().split(b"\n") if ln.startswith(b"data: ")]
            assert frames[-1] == b"data: [DONE]"
            err = json.loads(frames[-2][6:])
            assert err["error"]["code"] in (502, 504)
            load = {e["id"]: e["load"] for e in g.get_json("/debug/endpoints")["endpoints"]}
            assert all(v["in_flight_requests"] == 0 and v["in_flight_kv_tokens"] == 0 for v in load.values())
            for i in range(3):  # the gateway keeps serving, from the survivor
                status, out, headers = _post(g.url + "/v1/completions",
                                             {"model": "tiny", "prompt": f"after {i}", "max_tokens": 2})
                assert status == 200
