"""Precise prefix routing through ``lanterna up``: KV events from simulated replicas steer repeat prefixes."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_gateway_support import GatewayProc, run_lanterna

pytestmark = pytest.mark.integration

MODEL = "sim-model"
EPP = """apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
  - type: precise-prefix-cache-scorer
  - type: max-score-picker
schedulingProfiles:
  - name: default
    plugins:
      - pluginRef: precise-prefix-cache-scorer
      - pluginRef: max-score-picker
"""


def _complete(g: GatewayProc, prompt: str) -> tuple[str, int]:
    body = json.dumps({"model": MODEL, "prompt": prompt, "max_tokens": 2}).encode()
    req = urllib.request.Request(g.url + "/v1/completions", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        usage = json.loads(r.read())["usage"]
        return r.headers["x-gateway-destination-endpoint"], usage["prompt_tokens_details"]["cached_tokens"] or 0


def _blocks(g: GatewayProc) -> dict[str, int]:
    return {e["id"]: e["kv_index_blocks"] or 0 for e in g.get_json("/debug/endpoints")["endpoints"]}


def test_repeat_prefix_follows_kv_events(tmp_path: Path) -> None:
    epp = tmp_path / "epp.yaml"
    epp.write_text(EPP)
    args = ["up", "--replicas", "2", "--sim-model", MODEL, "--sim-arg=--timing", "--sim-arg=constant",
            "--sim-arg=--block-size", "--sim-arg=16", "--scheduler-config", str(epp)]
    with run_lanterna(args, tmp_path, min_ready=2) as g:
        for topic in ("astronomy", "botany", "chemistry", "dentistry"):
            prefix = f"A long shared document about {topic}. " * 30
            before = _blocks(g)
            first, _ = _complete(g, prefix + "Question one?")
            deadline = time.monotonic() + 10
            while _blocks(g)[first] <= before[first]:  # this prompt's BlockStored events reach the index
                assert time.monotonic() < deadline, "no KV events indexed"
                time.sleep(0.02)
            again, cached = _complete(g, prefix + "Question two?")
            assert again == first
            assert cached > 0
