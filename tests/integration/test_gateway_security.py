"""Issue 9 "who may call what", through a real ``lanterna gateway`` process in front of an echo model server.

The echo upstream (``tests.integration.echo_upstream``, its own process) returns the headers and body it got,
so these tests see what a replica (or an llm-d sidecar in front of it) would trust: no client credential, no
internal routing header, a body decompressed once. With ``flowcontrol.max_concurrency=1`` and a held request
on the replica, the flow-control queue becomes observable: the echo numbers the requests in dispatch order.
"""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from lanterna.auth.keys import hash_key
from tests.conftest import free_port
from tests.fuzz.oracle import error_shape_problem
from tests.integration.echo_upstream import EchoProc, start_echo
from tests.integration.test_gateway_support import GatewayProc, run_lanterna

pytestmark = pytest.mark.integration

COMP = "/v1/completions"
BODY = {"model": "tiny", "prompt": "hello", "max_tokens": 2}
# Held requests wait on the replica for as long as a test needs: no first-byte timeout may fire meanwhile.
PATIENT = ["--set", "gateway.timeouts.first_byte_floor_s=60"]


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def echo(self) -> dict[str, Any]:
        return self.json["echo"]  # type: ignore[no-any-return]


def send(url: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None, *, method: str = "POST",
         timeout: float = 60.0) -> Answer:
    data = None if method == "GET" else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Answer(r.status, r.read(), {k.lower(): v for k, v in r.headers.items()})
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.read(), {k.lower(): v for k, v in e.headers.items()})


def metric_sum(url: str, name: str, headers: dict[str, str] | None = None) -> float:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
        text = r.read().decode()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name + "{") or
               ln.startswith(name + " "))


def wait_queued(g: GatewayProc, n: int, metrics_url: str | None = None, headers: dict[str, str] | None = None,
                timeout_s: float = 20.0) -> None:
    """Until ``n`` requests wait in the gateway's flow-control queue."""
    url = metrics_url or g.url + "/metrics"
    deadline = time.monotonic() + timeout_s
    while metric_sum(url, "lanterna_flow_control_queue_band_size", headers) < n:
        assert time.monotonic() < deadline, f"{n} queued requests not seen:\n{g.log_tail()}"
        time.sleep(0.02)


def access_lines(g: GatewayProc, at_least: int = 0, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The gateway's access lines so far; with ``at_least``, until that many are on disk (a line is written
    after its response is sent, so the client can be faster than the log: poll the file, bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = []
        for ln in g.log_path.read_text(errors="replace").splitlines():
            if ln.startswith("{") and '"duration_ms"' in ln:
                out.append(json.loads(ln))
        if len(out) >= at_least or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


@pytest.fixture
def echo(tmp_path: Path) -> Iterator[EchoProc]:
    with start_echo(tmp_path, free_port()) as e:
        yield e


def _gateway(echo: EchoProc, tmp_path: Path, *extra: str, open_admin: bool = True) -> Any:
    return run_lanterna(["gateway", "--endpoint", echo.address, "--model", "tiny", *extra], tmp_path,
                        open_admin=open_admin)


# -- what reaches a replica ------------------------------------------------------------------------------------


SPOOFED = {"authorization": "Bearer client-secret", "x-api-key": "client-key",
           "x-prefiller-host-port": "169.254.169.254:80", "x-gateway-destination-endpoint": "10.0.0.1:1",
           "x-gateway-destination-endpoint-served": "10.0.0.1:1", "x-llm-d-request-dropped-reason": "x",
           "x-llm-d-internal": "1", "x-gateway-model-name-rewrite": "other"}


def test_client_credentials_and_internal_headers_never_reach_the_replica(echo: EchoProc, tmp_path: Path) -> None:
    with _gateway(echo, tmp_path) as g:
        a = send(g.url + COMP, BODY, {**SPOOFED, "x-custom": "kept"})
    assert a.status == 200, a.body
    got = {k.lower(): v for k, v in a.echo["headers"].items()}
    assert not set(SPOOFED) & set(got), f"forwarded: {sorted(set(SPOOFED) & set(got))}"
    assert got["x-custom"] == "kept"  # everything else passes
    assert json.loads(a.echo["body"])["model"] == "tiny"  # the rewrite header was ignored
    assert a.headers["x-gateway-destination-endpoint"] == echo.address  # the spoofed hint routed nowhere


def test_the_backend_credential_replaces_the_clients(echo: EchoProc, tmp_path: Path) -> None:
    key_file = tmp_path / "backend.key"
    key_file.write_text("backend-secret\n")
    with _gateway(echo, tmp_path, "--set", f"auth.upstream_api_key_file={key_file}") as g:
        with_client_key = send(g.url + COMP, BODY, {"authorization": "Bearer client-secret"})
        without = send(g.url + COMP, BODY)
    for a in (with_client_key, without):
        assert a.status == 200, a.body
        got = {k.lower(): v for k, v in a.echo["headers"].items()}
        assert got["authorization"] == "Bearer backend-secret"


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_body_reaches_the_replica_decompressed_without_the_header(
        echo: EchoProc, tmp_path: Path, encoding: str, compress: Any) -> None:
    raw = json.dumps({**BODY, "prompt": "zipped " * 50}).encode()
    with _gateway(echo, tmp_path) as g:
        a = send(g.url + COMP, compress(raw), {"content-encoding": encoding})
        unknown = send(g.url + COMP, raw, {"content-encoding": "br"})
    assert a.status == 200, a.body
    assert a.echo["body"].encode() == raw  # decompressed once, forwarded as JSON
    assert "content-encoding" not in {k.lower() for k in a.echo["headers"]}
    assert unknown.status in (400, 415) and error_shape_problem(unknown.status, unknown.body) is None


# -- priority from a client without a key ----------------------------------------------------------------------


def test_priority_header_without_a_key_does_not_jump_the_queue(echo: EchoProc, tmp_path: Path) -> None:
    """Open mode caps a keyless client's priority at ``auth.anonymous_max_priority`` (0): a bare objective of
    999999 queues behind an earlier plain request; a lower one (-1) still goes last (priorities do work)."""
    with _gateway(echo, tmp_path, "--set", "flowcontrol.max_concurrency=1", *PATIENT) as g, \
            ThreadPoolExecutor(4) as pool:
        hold = pool.submit(send, g.url + COMP, {**BODY, "prompt": "hold"})
        echo.wait_held(1)  # the one dispatch slot is taken
        sent = {}
        for i, (name, objective) in enumerate((("low", "-1"), ("plain", None), ("spoofed", "999999"))):
            hdrs = {"x-gateway-inference-objective": objective} if objective else {}
            sent[name] = pool.submit(send, g.url + COMP, {**BODY, "prompt": name}, hdrs)
            wait_queued(g, i + 1)
        echo.release()
        answers = {name: f.result() for name, f in sent.items()}
        assert hold.result().status == 200
    assert all(a.status == 200 for a in answers.values()), {n: a.body for n, a in answers.items()}
    order = sorted(answers, key=lambda n: answers[n].echo["seq"])
    assert order == ["plain", "spoofed", "low"], order
    prio = {ln["request_id"]: ln["priority"] for ln in access_lines(g, at_least=4)}
    assert prio[answers["spoofed"].headers["x-request-id"]] == 0


# -- API keys through a real gateway ---------------------------------------------------------------------------


ADMIN = "admin-key-0123456789"
KEYS = {"alpha": dict(tenant="team-a", max_priority=2, requests_per_s=4, burst=4),
        "gold": dict(tenant="team-g", max_priority=5),
        "beta": dict(tenant="team-b", max_priority=0)}


@pytest.fixture
def keyed_gateway(echo: EchoProc, tmp_path: Path) -> Iterator[tuple[GatewayProc, str]]:
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(yaml.safe_dump({"keys": [{"hash": hash_key(f"sk-{n}"), "name": n, **spec}
                                                  for n, spec in KEYS.items()]}))
    metrics_port = free_port()
    args = ["--set", "auth.enabled=true", "--set", f"auth.keys_file={keys_file}",
            "--set", f"auth.admin_keys=[{hash_key(ADMIN)}]", "--set", f"gateway.metrics_port={metrics_port}",
            "--set", "flowcontrol.max_concurrency=1", *PATIENT]
    with _gateway(echo, tmp_path, *args, open_admin=False) as g:
        yield g, f"http://127.0.0.1:{metrics_port}/metrics"


def key(name: str, objective: str | None = None) -> dict[str, str]:
    hdrs = {"authorization": f"Bearer sk-{name}"}
    if objective is not None:
        hdrs["x-gateway-inference-objective"] = objective
    return hdrs


def test_requests_without_a_valid_key_get_401_in_the_openai_shape(keyed_gateway: tuple[GatewayProc, str]) -> None:
    g, _ = keyed_gateway
    for hdrs in ({}, {"authorization": "Bearer sk-nope"}, {"x-api-key": "sk-nope"}, {"authorization": "Basic eDp5"},
                 {"authorization": f"Bearer {ADMIN}"}):  # an admin key is not a client key
        for path in (COMP, "/v1/chat/completions"):
            a = send(g.url + path, BODY, hdrs)
            assert a.status == 401, (hdrs, a.body)
            assert error_shape_problem(401, a.body) is None, a.body
        assert send(g.url + "/v1/models", b"", hdrs, method="GET").status == 401
    assert send(g.url + COMP, BODY, key("beta")).status == 200
    assert send(g.url + COMP, BODY, {"x-api-key": "sk-beta"}).status == 200
    assert send(g.url + "/v1/models", b"", key("beta"), method="GET").status == 200


def test_admin_routes_need_the_admin_key_and_metrics_have_their_own_port(
        keyed_gateway: tuple[GatewayProc, str]) -> None:
    g, metrics_url = keyed_gateway
    score = {"model": "tiny", "prompt": "Initech"}
    for hdrs in ({}, key("gold"), {"authorization": "Bearer wrong"}):
        assert send(g.url + "/debug/endpoints", b"", hdrs, method="GET").status == 401
        assert send(g.url + "/debug/score", score, hdrs).status == 401
        assert send(g.url + "/admin/auth/reload", b"{}", hdrs).status == 401
    admin = {"authorization": f"Bearer {ADMIN}"}
    eps = send(g.url + "/debug/endpoints", b"", admin, method="GET")
    assert eps.status == 200 and eps.json["endpoints"]
    assert send(g.url + "/debug/score", score, admin).status == 200
    assert send(g.url + "/metrics", b"", admin, method="GET").status == 404  # not on the client port
    assert metric_sum(metrics_url, "lanterna_flow_control_in_flight_requests") == 0  # served on its own port


def test_rate_limit_and_priority_ceiling_hold_under_concurrent_clients(
        keyed_gateway: tuple[GatewayProc, str]) -> None:
    g, _ = keyed_gateway
    # 8 clients at once: alpha (4/s, burst 4) is held to its rate; beta (no limit) is not slowed by it; every
    # request asks for priority 999999 and gets its key's ceiling.
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        futs = [(n, pool.submit(send, g.url + COMP, {**BODY, "prompt": f"rl {i}"}, key(n, "999999")))
                for i in range(12) for n in ("alpha", "beta")]
        answers = [(n, f.result()) for n, f in futs]
    elapsed = time.monotonic() - t0
    alpha = [a for n, a in answers if n == "alpha"]
    beta = [a for n, a in answers if n == "beta"]
    assert all(a.status == 200 for a in beta), [a.status for a in beta]
    ok = sum(a.status == 200 for a in alpha)
    limited = [a for a in alpha if a.status == 429]
    assert ok + len(limited) == len(alpha)
    assert 4 <= ok <= 4 + 4 * elapsed + 1, (ok, elapsed)  # the burst, plus what the rate refilled meanwhile
    assert limited and all(int(a.headers["retry-after"]) >= 1 and error_shape_problem(429, a.body) is None
                           for a in limited)
    lines = {ln["request_id"]: ln for ln in access_lines(g, at_least=len(answers))}
    assert len(lines) >= len(answers)  # the 429s too: one line per request
    for name, ceiling in (("alpha", 2), ("beta", 0)):
        served = [lines[a.headers["x-request-id"]] for n, a in answers if n == name and a.status == 200]
        assert served and {ln["priority"] for ln in served} == {ceiling}  # 999999 asked, the ceiling given
        assert {ln["fairness_id"] for ln in served} == {KEYS[name]["tenant"]}
    assert {lines[a.headers["x-request-id"]]["status"] for a in limited} == {429}


def test_priority_ceiling_orders_the_queue(echo: EchoProc, keyed_gateway: tuple[GatewayProc, str]) -> None:
    """With the one dispatch slot held, gold (5) goes first; alpha's 999999 counts as its ceiling 2 and keeps
    its place behind alpha's earlier 2; beta's 999999 counts as 0 and goes last although it came first."""
    g, metrics_url = keyed_gateway
    plan = (("beta-999999", "beta", "999999"), ("alpha-2", "alpha", "2"), ("alpha-999999", "alpha", "999999"),
            ("gold-5", "gold", "5"))
    with ThreadPoolExecutor(5) as pool:
        hold = pool.submit(send, g.url + COMP, {**BODY, "prompt": "hold"}, key("gold"))
        echo.wait_held(1)
        sent = {}
        for i, (label, name, objective) in enumerate(plan):
            sent[label] = pool.submit(send, g.url + COMP, {**BODY, "prompt": label}, key(name, objective))
            wait_queued(g, i + 1, metrics_url)
        echo.release()
        got = {label: f.result() for label, f in sent.items()}
        assert hold.result().status == 200
    assert all(a.status == 200 for a in got.values()), {k: a.body for k, a in got.items()}
    order = sorted(got, key=lambda x: got[x].echo["seq"])
    assert order == ["gold-5", "alpha-2", "alpha-999999", "beta-999999"], order
