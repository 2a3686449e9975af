"""P/D end to end with real processes: gateway + one prefill sim + one decode sim, in both llm-d placements.

Placement ``gateway``: the gateway sends the prefill leg, then the decode with the returned
``kv_transfer_params``. Placement ``sidecar``: the gateway only sets ``x-prefiller-host-port`` and a real
``lanterna sidecar`` in front of the decode sim runs both legs. In both, the decode sim pulls the prefill's KV
over a real socket (``POST /lanterna/kv/pull``): the pull succeeds only when the ``remote_block_ids``,
``remote_host`` and ``remote_port`` the prefill sim returned reached the decode sim unchanged, and the decode
then reports the pulled prompt as cached (all but the last token).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.test_gateway_support import run_lanterna
from tests.integration.vllm_server import start_sim

pytestmark = pytest.mark.integration

PD_SCHEDULER = {
    "apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig",
    "plugins": [{"type": "prefill-filter"}, {"type": "decode-filter"}, {"type": "queue-scorer"},
                {"type": "max-score-picker"},
                {"type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": 32}},
                {"type": "disagg-profile-handler"}],
    "schedulingProfiles": [
        {"name": "prefill", "plugins": [{"pluginRef": "prefill-filter"}, {"pluginRef": "queue-scorer"},
                                        {"pluginRef": "max-score-picker"}]},
        {"name": "decode", "plugins": [{"pluginRef": "decode-filter"}, {"pluginRef": "queue-scorer"},
                                       {"pluginRef": "max-score-picker"}]}],
}
SIM_ARGS = ["--timing", "constant"]


def _post(url: str, body: dict, headers: dict[str, str] | None = None, timeout: float = 30.0
          ) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def _metric(url: str, name: str, **labels: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and all(w in line for w in want):
            total += float(line.rsplit(" ", 1)[1])
    return total


@contextmanager
def _sidecar(decode_port: int, allow: list[str], log_dir: Path) -> Iterator[str]:
    port = free_port()
    log_path = log_dir / f"sidecar-{port}.log"
    cmd = [sys.executable, "-m", "lanterna.cli.main", "sidecar", "--port", str(port), "--decode",
           f"127.0.0.1:{decode_port}", *sum((["--allow-prefiller", a] for a in allow), [])]
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                with urllib.request.urlopen(url + "/sidecar/metrics", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)  # polling a starting process: no event to await across processes
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def _pd_stack(tiny_model_dir: Path, tmp_path: Path, placement: str) -> Iterator[dict[str, object]]:
    """prefill sim + decode sim (+ sidecar in front of it) + gateway; yields their handles and URLs."""
    with ExitStack() as stack:
        pf = stack.enter_context(start_sim(tiny_model_dir, port=free_port(), extra_args=[*SIM_ARGS, "--role", "prefill"]))
        dc = stack.enter_context(start_sim(tiny_model_dir, port=free_port(), extra_args=[*SIM_ARGS, "--role", "decode"]))
        pf_addr = f"127.0.0.1:{pf.port}"
        decode_url = dc.base_url
        if placement == "sidecar":
            decode_url = stack.enter_context(_sidecar(dc.port, [pf_addr], tmp_path))
        cfg = {"scheduler": PD_SCHEDULER, "gateway": {"pd": {"placement": placement}},
               "endpoints": {"static": [
                   {"address": pf_addr, "models": ["tiny"], "labels": {"llm-d.ai/role": "prefill"}},
                   {"address": decode_url.removeprefix("http://"), "models": ["tiny"],
                    "labels": {"llm-d.ai/role": "decode"}}]}}
        cfg_path = tmp_path / f"pd-{placement}.yaml"
        cfg_path.write_text(json.dumps(cfg))
        g = stack.enter_context(run_lanterna(["gateway", "--config", str(cfg_path)], tmp_path, min_ready=2))
        yield {"gateway": g.url, "prefill": pf, "decode": dc, "decode_url": decode_url}


def _prompt(tag: str) -> str:
    return f"{tag}: " + "the quick brown fox jumps over the lazy dog " * 12


@pytest.mark.parametrize("placement", ["gateway", "sidecar"])
def test_pd_end_to_end_streaming_and_not(tiny_model_dir: Path, tmp_path: Path, placement: str) -> None:
    with _pd_stack(tiny_model_dir, tmp_path, placement) as s:
        g, dc = s["gateway"], s["decode"]
        status, body, headers = _post(f"{g}/v1/completions",
                                      {"model": "tiny", "prompt": _prompt(placement), "max_tokens": 4})
        assert status == 200, body
        usage = json.loads(body)["usage"]
        assert usage["completion_tokens"] == 4
        assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1  # pulled, not computed
        assert headers["x-gateway-destination-endpoint"] == s["decode_url"].removeprefix("http://")
        status, body, _ = _post(f"{g}/v1/chat/completions", {
            "model": "tiny", "stream": True, "max_tokens": 5, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": _prompt(placement + " chat")}]})
        assert status == 200
        frames = [ln[6:] for ln in body.split(b"\n") if ln.startswith(b"data: ")]
        assert frames[-1] == b"[DONE]"
        usage = json.loads(frames[-2])["usage"]
        assert usage["completion_tokens"] == 5
        assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1
        assert _metric(f"{dc.base_url}/metrics", "lanterna_sim_kv_transfers_total", outcome="ok") == 2
        assert _metric(f"{g}/metrics", "llm_d_inference_scheduler_disagg_decision_total",
                       decision_type="prefill-decode") == 2
        if placement == "sidecar":
            assert _metric(f"{s['decode_url']}/sidecar/metrics", "lanterna_sidecar_prefill_total", outcome="ok") == 2
        short, _, _ = _post(f"{g}/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 2})
        assert short == 200  # below nonCachedTokens: decode-only, no KV pull
        assert _metric(f"{g}/metrics", "llm_d_inference_scheduler_disagg_decision_total",
                       decision_type="decode-only") == 1
        assert _metric(f"{dc.base_url}/metrics", "lanterna_sim_kv_transfers_total") == 2


@pytest.mark.parametrize("placement", ["gateway", "sidecar"])
def test_prefill_killed_falls_back_to_aggregated_serving(tiny_model_dir: Path, tmp_path: Path,
                                                        placement: str) -> None:
    with _pd_stack(tiny_model_dir, tmp_path, placement) as s:
        g, pf = s["gateway"], s["prefill"]
        pf.process.send_signal(signal.SIGKILL)
        pf.process.wait()
        for i in range(3):  # the health checker may notice meanwhile: then the decider has no prefill endpoint
            status, body, _ = _post(f"{g}/v1/completions",
                                    {"model": "tiny", "prompt": _prompt(f"{placement} {i}"), "max_tokens": 3})
            assert status == 200, body
            usage = json.loads(body)["usage"]
            assert usage["completion_tokens"] == 3 and usage["prompt_tokens_details"]["cached_tokens"] == 0
        if placement == "gateway":
            assert _metric(f"{g}/metrics", "lanterna_gateway_pd_prefill_fallbacks_total", reason="connect") >= 1
        else:
            assert _metric(f"{s['decode_url']}/sidecar/metrics", "lanterna_sidecar_prefill_total",
                           outcome="connect") >= 1


def test_decode_pull_failure_falls_back_to_local_prefill(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The prefill leg succeeds but the decode cannot read the KV (lease gone): local prefill, counted."""
    with start_sim(tiny_model_dir, port=free_port(), extra_args=[*SIM_ARGS, "--role", "prefill"]) as pf, \
            start_sim(tiny_model_dir, port=free_port(), extra_args=[*SIM_ARGS, "--role", "decode"]) as dc:
        body = {"model": "tiny", "prompt": _prompt("lease"), "max_tokens": 2}
        status, out, _ = _post(f"{pf.base_url}/v1/completions",
                               {**body, "max_tokens": 1, "kv_transfer_params": {"do_remote_decode": True}})
        kv = json.loads(out)["kv_transfer_params"]
        assert status == 200 and kv["do_remote_prefill"] is True and kv["remote_port"] == pf.port
        first = _post(f"{dc.base_url}/v1/completions", {**body, "kv_transfer_params": kv})
        again = _post(f"{dc.base_url}/v1/completions", {**body, "kv_transfer_params": kv})  # already read
        assert first[0] == again[0] == 200
        assert json.loads(again[1])["usage"]["completion_tokens"] == 2
        assert _metric(f"{dc.base_url}/metrics", "lanterna_sim_kv_transfers_total", outcome="ok") == 1
        assert _metric(f"{dc.base_url}/metrics", "lanterna_sim_kv_transfers_total", outcome="not_held") == 1
        status, out, _ = _post(f"{dc.base_url}/v1/completions",
                               {**body, "max_tokens": 1, "kv_transfer_params": {"do_remote_decode": True}})
        assert status == 200 and json.loads(out).get("kv_transfer_params") is None  # a decoder holds no KV


def test_sidecar_refuses_unknown_prefill_targets(tiny_model_dir: Path, tmp_path: Path) -> None:
    with start_sim(tiny_model_dir, port=free_port(), extra_args=SIM_ARGS) as dc, \
            _sidecar(dc.port, ["127.0.0.1:1"], tmp_path) as sc:
        body = {"model": "tiny", "prompt": "x", "max_tokens": 1}
        for target, code in (("169.254.169.254:80", 403), ("127.0.0.1:2", 403), ("evil.example/x:80", 400),
                             ("127.0.0.1", 400), ("127.0.0.1:1,10.0.0.1:80", 400)):
            status, out, _ = _post(f"{sc}/v1/completions", body, {"x-prefiller-host-port": target})
            assert status == code, (target, out)
            err = json.loads(out)["error"]
            assert err["code"] == code and err["type"] and err["message"]
        assert _metric(f"{sc}/sidecar/metrics", "lanterna_sidecar_prefill_total", outcome="refused") == 5
        assert _metric(f"{dc.base_url}/metrics", "vllm:request_success_total") == 0  # nothing reached the server
        status, _, _ = _post(f"{sc}/v1/completions", body)  # no header: plain proxy
        assert status == 200
