"""End to end: ``lanterna bench run`` against a real ``lanterna sim`` process (wire compatibility)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lanterna.cli.main import main
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("sim exited early")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # polling a health endpoint with a deadline
    raise TimeoutError("sim not healthy")


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_bench_run_against_sim(tmp_path: Path, api: str) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lanterna.cli.main", "sim", "--model", "sim", "--port", str(port),
                             "--timing", "constant", "--enable-prompt-tokens-details"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc)
        cfg = tmp_path / "b.yaml"
        cfg.write_text(
            "name: e2e\nworkload: {type: shared-prefix, num_groups: 2, prompts_per_group: 3, system_len: 64,"
            " question_len: 16, output_len: 5}\n"
            "load: {type: poisson, warmup: {rate: 20, num_requests: 2}, stages: [{rate: 20, num_requests: 12}]}\n"
            f"target: {{url: '{url}', model: sim, api: {api}}}\n")
        assert main(["bench", "run", str(cfg), "--no-progress", "--out", str(tmp_path / "out")]) == 0
        rep = json.loads((tmp_path / "out" / "report.json").read_text())
        st = rep["stages"][0]
        assert st["num_completed"] == 12 and st["num_failed"] == 0
        assert st["tokens"]["output"] == 12 * 5
        assert st["latency_s"]["ttft"]["p50"] > 0 and st["latency_s"]["itl"] is not None
        assert st["prefix_cache_hit_rate"] is not None and st["prefix_cache_hit_rate"] > 0
    finally:
        proc.terminate()
        proc.wait(10)
