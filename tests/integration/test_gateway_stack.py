"""``lanterna up`` end to end: gateway + simulated replicas as processes, driven by the official client."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import openai
import pytest

from tests.integration.test_gateway_support import run_lanterna, stop

pytestmark = pytest.mark.integration

MODEL = "sim-model"


def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


def test_lanterna_up_serves_openai_clients_and_stops_cleanly(tmp_path: Path) -> None:
    args = ["up", "--replicas", "2", "--sim-model", MODEL, "--sim-arg=--timing", "--sim-arg=constant",
            "--log-format", "json"]
    with run_lanterna(args, tmp_path, min_ready=2) as g:
        client = openai.OpenAI(base_url=g.url + "/v1", api_key="none", max_retries=0, timeout=30)
        assert [m.id for m in client.models.list().data] == [MODEL]

        c = client.completions.create(model=MODEL, prompt="The quick brown fox", max_tokens=5)
        assert c.usage is not None and c.usage.completion_tokens == 5 and c.choices[0].finish_reason == "length"

        chat = client.chat.completions.create(model=MODEL, max_tokens=4,
                                              messages=[{"role": "user", "content": "hello"}])
        assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 4

        chunks = list(client.chat.completions.create(
            model=MODEL, max_tokens=6, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "count"}]))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
        text = "".join(ch.choices[0].text for ch in client.completions.create(
            model=MODEL, prompt="stream me", max_tokens=5, stream=True) if ch.choices)
        assert text

        with pytest.raises(openai.NotFoundError) as nf:
            client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        assert MODEL in str(nf.value)
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model=MODEL, prompt="x", max_tokens=-1)

        endpoints = g.get_json("/debug/endpoints")["endpoints"]
        assert len(endpoints) == 2 and all(e["load"]["in_flight_requests"] == 0 for e in endpoints)
        assert all(e["metrics"]["age_s"] is not None and e["metrics"]["age_s"] < 2 for e in endpoints)
        addresses = [e["address"] for e in endpoints]
        assert all(_port_open(a) for a in addresses)
        assert stop(g) == 0
        assert not any(_port_open(a) for a in addresses)  # SIGTERM stopped every replica too

    # The console shows one access line per inference request (stdout; the other logs carry an "event")
    lines = [json.loads(ln) for ln in g.log_path.read_text().splitlines() if ln.startswith("{")]
    access = [ln for ln in lines if "event" not in ln]
    assert [(a["path"], a["status"], a["stream"]) for a in access] == [
        ("/v1/completions", 200, False), ("/v1/chat/completions", 200, False), ("/v1/chat/completions", 200, True),
        ("/v1/completions", 200, True), ("/v1/completions", 404, False), ("/v1/completions", 400, False)]
    assert len({a["request_id"] for a in access}) == 6
    served = access[:4]
    assert all(a["endpoint"] in addresses and a["model"] == MODEL and a["profile"] for a in served)
    assert [a["output_tokens"] for a in served] == [5, 4, 6, 5]
    assert all(a["ttft_ms"] <= a["duration_ms"] for a in served)
    assert [a["prompt_tokens"] is not None for a in served] == [True, True, True, False]  # no usage: frames counted
    assert (access[4]["model"], access[4]["error"], access[4]["endpoint"]) == ("no-such-model", "NotFoundError", None)
    assert access[5]["endpoint"] in addresses  # vLLM's own 400, passed through


def test_invalid_config_is_one_line_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "stack.yaml"
    bad.write_text("gateway:\n  port: [oops\n")
    for cmd in (["gateway", "--config", str(bad)], ["up", "--config", str(bad)],
                ["gateway", "--endpoint", "no-port-here"], ["up", "--set", "gateway.retries.max_attempts=0"]):
        r = subprocess.run([sys.executable, "-m", "lanterna.cli.main", *cmd], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2, (cmd, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lanterna ") and "Traceback" not in r.stderr, r.stderr
