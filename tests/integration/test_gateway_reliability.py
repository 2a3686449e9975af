"""Issue 9 regressions through a real gateway process in front of real ``lanterna sim`` processes.

A poison request (one every replica refuses with 5xx) must not open breakers; a SIGSTOPped replica must not
hold its clients (other replicas answer within seconds); with every replica down, clients get 503 with
``Retry-After`` and ``/ready`` says 503 while ``/health`` stays 200; a half-open probe whose client leaves
does not cut its replica out for good; slow clients (half-sent heads and bodies) are closed at the edge's
deadlines while others are served; SIGTERM drains (readiness off, new requests 503, running streams finish,
exit 0). The header-spoofing and API-key findings are in ``test_gateway_security.py``.
"""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.fuzz.oracle import error_shape_problem
from tests.integration.echo_upstream import start_echo
from tests.integration.test_gateway_support import GatewayProc, run_lanterna
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


def _access_lines(g: GatewayProc) -> list[dict]:
    return [json.loads(ln) for ln in g.log_path.read_text(errors="replace").splitlines()
            if ln.startswith("{") and '"duration_ms"' in ln]


def _served_by(url: str, n: int) -> set[str]:
    with ThreadPoolExecutor(n) as pool:
        res = list(pool.map(lambda i: _post(url + "/v1/completions", {
            "model": "tiny", "prompt": f"after {i} {time.monotonic()}", "max_tokens": 2}), range(n)))
    assert all(r[0] == 200 for r in res), [r[0] for r in res]
    return {r[2]["x-gateway-destination-endpoint"] for r in res}


def _aborted(port: int) -> float:
    """Requests a sim aborted because its client (the gateway) left: ``vllm:request_success_total{abort}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in r.read().decode().splitlines()
                   if ln.startswith("vllm:request_success_total{") and 'finished_reason="abort"' in ln)


def _gives_up(url: str, body: dict, timeout_s: float) -> bool:
    """POST as a client that leaves after ``timeout_s``; True when it did leave (no answer in time)."""
    try:
        _post(url, body, timeout=timeout_s)
    except (TimeoutError, urllib.error.URLError) as exc:
        return isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)
    return False


def test_half_open_probe_whose_client_disconnects_does_not_cut_the_replica_out(tiny_model_dir: Path,
                                                                               tmp_path: Path) -> None:
    """Issue 9: the probe's client left, neither on_success nor on_failure ran, the breaker stayed "probe in
    progress" and the replica got 0 of 52 requests. Health checks are slowed to never so only the breaker
    decides (a health check seeing the replica back would close the circuit by itself)."""
    port_a = free_port()
    with ExitStack() as stack:
        a = stack.enter_context(start_sim(tiny_model_dir, port=port_a, log_dir=tmp_path))
        b = stack.enter_context(start_sim(tiny_model_dir, port=free_port(), log_dir=tmp_path))
        args = ["gateway", "--endpoint", f"127.0.0.1:{a.port}", "--endpoint", f"127.0.0.1:{b.port}", "--model",
                "tiny", "--set", "endpoints.health_interval_s=3600", "--set", "gateway.circuit_breaker.open_s=1",
                "--set", "gateway.circuit_breaker.failure_threshold=2"]
        g = stack.enter_context(run_lanterna(args, tmp_path, min_ready=2))
        a_id = f"127.0.0.1:{port_a}"
        a.process.send_signal(signal.SIGKILL)
        a.process.wait()
        deadline = time.monotonic() + 30
        while not any(e["circuit_open"] for e in g.get_json("/debug/endpoints")["endpoints"] if e["id"] == a_id):
            assert time.monotonic() < deadline, g.log_tail()
            assert _served_by(g.url, 4) == {f"127.0.0.1:{b.port}"}  # failed attempts on A retried on B
        stack.enter_context(start_sim(tiny_model_dir, port=port_a, log_dir=tmp_path))  # back, same port
        # Clients that give up after 0.5 s on long requests, until one of them was A's half-open probe.
        for _ in range(10):
            with ThreadPoolExecutor(4) as pool:
                gone = list(pool.map(lambda i: _gives_up(g.url + "/v1/completions", {
                    "model": "tiny", "prompt": f"probe {i} {time.monotonic()}", "max_tokens": 1500}, 0.5), range(4)))
            assert all(gone), "a 1500-token request answered within 0.5 s"
            deadline = time.monotonic() + 2
            while not (probed := _aborted(port_a)) and time.monotonic() < deadline:  # the abort follows the leave
                time.sleep(0.05)
            if probed:
                break
        assert probed, f"no probe reached A:\n{g.log_tail()}"
        deadline = time.monotonic() + 30
        while a_id not in _served_by(g.url, 4):
            assert time.monotonic() < deadline, f"A never served again:\n{g.log_tail()}"
        assert not any(e["circuit_open"] for e in g.get_json("/debug/endpoints")["endpoints"])


def _closed_within(sock: socket.socket, limit_s: float) -> tuple[float | None, bytes]:
    """Seconds until the peer closed ``sock`` (None: still open at ``limit_s``) and what it sent."""
    t0, got = time.monotonic(), b""
    sock.settimeout(limit_s)
    try:
        while chunk := sock.recv(65536):
            got += chunk
        return time.monotonic() - t0, got
    except TimeoutError:
        return None, got
    except OSError:  # reset: closed too
        return time.monotonic() - t0, got


def test_slow_clients_are_closed_at_the_edge_deadlines_while_others_are_served(tmp_path: Path) -> None:
    """Issue 9: 400 slow connections stayed open 130 s. Half-sent heads are closed at the header deadline,
    half-sent bodies at the body deadline (408 in the OpenAI shape), and normal requests meanwhile get 200."""
    with start_echo(tmp_path, free_port()) as echo, \
            run_lanterna(["gateway", "--endpoint", echo.address, "--model", "tiny",
                          "--set", "gateway.limits.header_timeout_s=1", "--set", "gateway.limits.body_timeout_s=2"],
                         tmp_path) as g:
        socks = []
        t0 = time.monotonic()
        for i in range(60):
            s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
            if i < 40:
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            else:
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 1000\r\n\r\n{\"model\":")
            socks.append(s)
        for i in range(5):  # served while the slow ones hold their connections
            status, _, _ = _post(g.url + "/v1/completions", {"model": "tiny", "prompt": f"ok {i}", "max_tokens": 2})
            assert status == 200
        try:
            with ThreadPoolExecutor(16) as pool:
                results = list(pool.map(lambda s: _closed_within(s, 30), socks))
        finally:
            for s in socks:
                s.close()
        took = time.monotonic() - t0
        assert all(t is not None for t, _ in results), f"{sum(t is None for t, _ in results)} still open after 30 s"
        assert took < 20, took  # deadlines of 1 s and 2 s, generous for a loaded machine
        for _, got in results:
            if got:  # a 408 when anything was sent, in the OpenAI shape; never the client's bytes
                head, _, body = got.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 408"), head
                assert error_shape_problem(408, body) is None, body
        assert g.proc.poll() is None
        status, _, _ = _post(g.url + "/v1/completions", {"model": "tiny", "prompt": "after", "max_tokens": 2})
        assert status == 200


def test_sigterm_drains_a_running_stream_then_exits_zero(tmp_path: Path) -> None:
    with start_echo(tmp_path, free_port()) as echo, \
            run_lanterna(["gateway", "--endpoint", echo.address, "--model", "tiny",
                          "--set", "gateway.timeouts.first_byte_floor_s=60"], tmp_path) as g, \
            ThreadPoolExecutor(1) as pool:
        body = {"model": "tiny", "prompt": "hold", "max_tokens": 2, "stream": True}
        running = pool.submit(_post, g.url + "/v1/completions", body)
        echo.wait_held(1)  # its first chunk is out; the replica holds the rest
        g.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _status(g.url + "/ready") != 503:  # readiness off first
            assert time.monotonic() < deadline, g.log_tail()
            time.sleep(0.02)
        status, refused, headers = _post(g.url + "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 2})
        retry_after = {k.lower(): v for k, v in headers.items()}["retry-after"]
        assert status == 503 and int(retry_after) >= 0 and error_shape_problem(503, refused) is None
        assert g.proc.poll() is None  # still draining the stream
        echo.release()
        status, streamed, _ = running.result(timeout=30)
        assert status == 200
        frames = [ln for ln in streamed.split(b"\n") if ln.startswith(b"data: ")]
        assert frames[-1] == b"data: [DONE]" and b'"error"' not in streamed and b"last" in frames[-2]
        assert g.proc.wait(30) == 0
        assert sorted(ln["status"] for ln in _access_lines(g)) == [200, 503]  # one line each, the refused one too
