"""Active-active precise routing: two ``lanterna gateway`` processes in front of the same ``lanterna sim``
replicas subscribe to the same KV-event publishers, so traffic sent through gateway A alone leaves both
gateways with equal indexes: ``/debug/score`` gives identical precise-prefix scores and picks on both."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from lanterna.cluster.launcher import SimLauncher
from tests.integration.test_gateway_support import GatewayProc, run_lanterna

pytestmark = pytest.mark.integration

MODEL = "sim-model"
PRECISE = "precise-prefix-cache-scorer"
EPP = {
    "apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig",
    "plugins": [{"type": PRECISE}, {"type": "max-score-picker"}],
    "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": PRECISE}, {"pluginRef": "max-score-picker"}]}],
}
TOPICS = ("astronomy", "botany", "chemistry", "dentistry", "ecology", "forestry")


def _post(g: GatewayProc, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    req = urllib.request.Request(g.url + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read()), r.headers.get("x-gateway-destination-endpoint")


def _precise(g: GatewayProc, prompt: str) -> tuple[dict[str, float], str | None]:
    """Per endpoint the precise scorer's raw score for ``prompt``, and the pick."""
    out, _ = _post(g, "/debug/score", {"model": MODEL, "prompt": prompt})
    rows = out["profiles"]["default"]["endpoints"]
    return {eid: row["scores"][PRECISE]["raw"] for eid, row in rows.items()}, out["pick"]


def test_two_gateways_score_identically_after_traffic_through_one(tmp_path: Path) -> None:
    launcher = SimLauncher(model=MODEL, sim_args=["--timing", "constant", "--block-size", "16"])
    try:
        replicas = asyncio.run(launcher.start(3))
        cfg = tmp_path / "gateway.yaml"
        cfg.write_text(yaml.safe_dump({
            "gateway": {"log_format": "text"},
            "endpoints": {"static": [{"address": r.address, "models": [MODEL], "kv_events": r.kv_events_endpoint}
                                     for r in replicas]},
            "scheduler": EPP,
            "kvindex": {"tokenizer": "default"},
        }))
        with ExitStack() as stack:
            a, b = (stack.enter_context(run_lanterna(["gateway", "--config", str(cfg)], tmp_path, min_ready=3))
                    for _ in range(2))
            prompts = {t: f"A long shared document about {t}. " * 30 for t in TOPICS}
            routed = {}
            for t, p in prompts.items():  # traffic through A only
                _, routed[t] = _post(a, "/v1/completions", {"model": MODEL, "prompt": p + "First?", "max_tokens": 2})
            probes = [p + "Second?" for p in prompts.values()] + ["An unrelated prompt about zoology. " * 20]

            deadline = time.monotonic() + 20
            while True:  # until every sent prefix is indexed on both, and both agree
                sa = [_precise(a, p) for p in probes]
                sb = [_precise(b, p) for p in probes]
                warm = all(max(s.values()) > 0.5 for s, _ in sa[: len(TOPICS)] + sb[: len(TOPICS)])
                if warm and sa == sb:
                    break
                assert time.monotonic() < deadline, f"indexes never converged:\nA={sa}\nB={sb}"
                time.sleep(0.05)

            for (t, served), (scores, pick) in zip(routed.items(), sa[: len(TOPICS)], strict=True):
                assert pick == served, t  # both gateways would send a repeat where A sent the original
                assert scores[served] == max(scores.values()) > 0.5
            assert max(sa[-1][0].values()) == 0.0  # nothing cached for a prompt nobody sent
            blocks_a = {e["id"]: e["kv_index_blocks"] for e in a.get_json("/debug/endpoints")["endpoints"]}
            blocks_b = {e["id"]: e["kv_index_blocks"] for e in b.get_json("/debug/endpoints")["endpoints"]}
            assert blocks_a == blocks_b and sum(blocks_a.values()) > 0
    finally:
        asyncio.run(launcher.stop())
