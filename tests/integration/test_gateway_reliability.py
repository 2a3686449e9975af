"""Issue 9 regressions through a real gateway process in front of real ``lanterna sim`` processes.

A poison request (one every replica refuses with 5xx) must not open breakers; a SIGSTOPped replica must not
hold its clients (other replicas answer within seconds); with every replica down, clients get 503 with
``Retry-After`` and ``/ready`` says 503 while ``/health`` stays 200.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.test_gateway_support import run_lanterna
from tests.integration.vllm_server import start_sim

pytestmark = pytest.mark.integration


def _post(url: str, body: bytes | dict, timeout: float = 30.0) -> tuple[int, bytes, dict[str, str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _metric_lines(g, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(g.url + "/metrics", timeout=5) as r:
        return [ln for ln in r.read().decode().splitlines() if ln.startswith(prefix)]


def test_poison_requests_do_not_open_breakers(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Failure injection answers 500 on every request: each replica refuses the same request, as with a
    # poison body; the gateway must blame the request, not the replicas.
    with ExitStack() as stack:
        sims = [stack.enter_context(start_sim(tiny_model_dir, port=free_port(), extra_args=[
            "--timing", "constant", "--failure-rate", "1.0", "--failure-types", "http_500"])) for _ in range(3)]
        args = ["gateway", *sum((["--endpoint", f"127.0.0.1:{s.port}"] for s in sims), []), "--model", "tiny",
                "--set", "gateway.circuit_breaker.failure_threshold=2", "--set", "gateway.circuit_breaker.open_s=60"]
        with run_lanterna(args, tmp_path, min_ready=3) as g:
            for i in range(6):
                status, body, _ = _post(g.url + "/v1/completions", {"model": "tiny", "prompt": f"p{i}", "max_tokens": 2})
                assert status == 500
                assert "127.0.0.1" not in body.decode()
            opened = [ln for ln in _metric_lines(g, "lanterna_gateway_circuit_open") if ln.endswith(" 1.0")]
            assert opened == []


def test_sigstopped_replica_clients_are_answered_by_others_within_seconds(tiny_model_dir: Path,
                                                                          tmp_path: Path) -> None:
    with start_sim(tiny_model_dir, port=free_port(), extra_args=["--timing", "constant"]) as a, \
            start_sim(tiny_model_dir, port=free_port(), extra_args=["--timing", "constant"]) as b:
        args = ["gateway", "--endpoint", f"127.0.0.1:{a.port}", "--endpoint", f"127.0.0.1:{b.port}",
                "--model", "tiny", "--set", "endpoints.health_interval_s=0.5"]
        with run_lanterna(args, tmp_path, min_ready=2) as g:
            a.process.send_signal(signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                with ThreadPoolExecutor(8) as pool:
                    res = list(pool.map(lambda i: _post(g.url + "/v1/completions", {
                        "model": "tiny", "prompt": f"stall {i}", "max_tokens": 2}), range(8)))
                took = time.monotonic() - t0
                assert [r[0] for r in res] == [200] * 8
                assert {r[2]["x-gateway-destination-endpoint"] for r in res} == {f"127.0.0.1:{b.port}"}
                assert took < 10.0  # the derived first-byte wait or the health checker moved them, not 120 s
            finally:
                a.process.send_signal(signal.SIGCONT)


def test_all_replicas_down_is_503_with_retry_after_and_not_ready(tiny_model_dir: Path, tmp_path: Path) -> None:
    with start_sim(tiny_model_dir, port=free_port(), extra_args=["--timing", "constant"]) as a:
        args = ["gateway", "--endpoint", f"127.0.0.1:{a.port}", "--model", "tiny",
                "--set", "endpoints.health_interval_s=0.2", "--set", "endpoints.unhealthy_after=1"]
        with run_lanterna(args, tmp_path, min_ready=1) as g:
            assert _status(g.url + "/ready") == 200
            a.process.send_signal(signal.SIGKILL)
            a.process.wait()
            deadline = time.monotonic() + 10
            while _status(g.url + "/ready") != 503:  # the health checker's next round marks it down
                assert time.monotonic() < deadline
                time.sleep(0.1)
            status, body, headers = _post(g.url + "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 2})
            assert status == 503 and int(headers["Retry-After"]) > 0
            assert headers["x-llm-d-request-dropped-reason"]
            assert json.loads(body)["error"]["type"] == "ServiceUnavailableError"
            assert _status(g.url + "/health") == 200
