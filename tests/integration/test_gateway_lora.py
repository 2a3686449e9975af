"""LoRA placement end to end: three ``lanterna sim`` replicas (``--enable-lora --max-loras 2``, four adapters each)
behind a real gateway process. With ``lanterna-lora-placement-scorer`` each adapter concentrates on few replicas;
with round-robin every adapter lands on every replica (the contrast that makes the assertion meaningful)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.test_gateway_support import run_lanterna
from tests.integration.vllm_server import ServerHandle, http, start_sim

pytestmark = pytest.mark.integration

ADAPTERS = [f"ad{i}" for i in range(4)]  # 3 replicas x 2 slots: room for every adapter + a second copy of ad0
NUM_REQUESTS, CONCURRENCY = 120, 12
PLACEMENT = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins: [{type: cost-model-scorer}, {type: no-hit-lru-scorer}, {type: lanterna-lora-placement-scorer},
          {type: max-score-picker}]
schedulingProfiles:
- name: default
  plugins: [{pluginRef: cost-model-scorer, weight: 1}, {pluginRef: no-hit-lru-scorer, weight: 4},
            {pluginRef: lanterna-lora-placement-scorer, weight: 6}, {pluginRef: max-score-picker}]
"""
ROUND_ROBIN = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins: [{type: round-robin}]
schedulingProfiles: [{name: default, plugins: [{pluginRef: round-robin}]}]
"""


@pytest.fixture(scope="module")
def sims(tiny_model_dir: Path, lora1: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerHandle]]:
    logs = tmp_path_factory.mktemp("lora-sims")
    extra = ["--max-loras", "2", "--timing", "constant", "--lora-load-s", "0.05"]
    with ExitStack() as stack:
        yield [stack.enter_context(start_sim(tiny_model_dir, port=free_port(), lora_modules=dict.fromkeys(ADAPTERS, lora1),
                                             extra_args=extra, log_dir=logs)) for _ in range(3)]


def _drive(url: str) -> None:
    rng = random.Random(5)
    names = [ADAPTERS[min(int(rng.expovariate(0.6)), 3)] for _ in range(NUM_REQUESTS)]  # skewed: ad0 hottest

    def one(i: int) -> int:
        # each adapter's tenant has its system prompt (the benchmark's multi-tenant shape), then a unique question
        prompt = f"system prompt of tenant {names[i]}: " + "be helpful " * 30 + f"question {i}"
        body = {"model": names[i], "prompt": prompt, "max_tokens": 20}
        return http(url, "/v1/completions", body).status

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        assert set(pool.map(one, range(NUM_REQUESTS))) == {200}


def _placements(log: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for ln in log.read_text().splitlines():
        if ln.startswith("{") and '"adapter"' in ln:
            rec = json.loads(ln)
            if rec.get("adapter") and rec.get("endpoint"):
                out[rec["adapter"]].add(rec["endpoint"])
    return out


@pytest.mark.parametrize("policy", ["placement", "round-robin"])
def test_adapters_concentrate_on_bounded_replicas(sims: list[ServerHandle], tmp_path: Path, policy: str) -> None:
    cfg = tmp_path / "epp.yaml"
    cfg.write_text(PLACEMENT if policy == "placement" else ROUND_ROBIN)
    args = ["gateway", *(a for s in sims for a in ("--endpoint", f"127.0.0.1:{s.port}")), "--log-format", "json",
            "--scheduler-config", str(cfg)]
    with run_lanterna(args, tmp_path, min_ready=3) as g:
        models = {m["id"] for m in g.get_json("/v1/models")["data"]}
        assert set(ADAPTERS) <= models
        _drive(g.url)
        log = g.log_path
    placed = _placements(log)
    assert sum(1 for _ in placed) == len(ADAPTERS)
    reps = sorted(len(v) for v in placed.values())
    if policy == "placement":
        assert max(reps) <= 2 and sum(reps) / len(reps) <= 2.0, placed
    else:
        assert sum(reps) / len(reps) >= 2.5, placed
    for s in sims:  # every replica drained; none ever ran more than max_loras adapters (the engine's rule)
        info = [ln for ln in http(s.base_url, "/metrics").body.decode().splitlines()
                if ln.startswith("vllm:lora_requests_info{")]
        assert info and 'max_lora="2"' in info[-1] and 'running_lora_adapters=""' in info[-1]
