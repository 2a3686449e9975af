"""The fuzz target: one real gateway process in front of three real ``lanterna sim`` processes on loopback.

Module-scoped so each fuzz module pays the start-up once (~5 s); the sims run with ``--time-scale 0`` so a
fuzzed ``max_tokens`` costs CPU, not wall time. The breaker settings are the gateway's defaults: a finding
that opens breakers under those defaults is exactly what a bad client could do in production.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.conftest import tiny_model_dir  # noqa: F401  (the session fixture, shared)
from tests.integration.test_gateway_support import GatewayProc, run_lanterna
from tests.integration.vllm_server import start_sim

N_SIMS = 3


@pytest.fixture(scope="module")
def fuzz_gateway(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProc]:  # noqa: F811
    log_dir = tmp_path_factory.mktemp("fuzz")
    with contextlib.ExitStack() as stack:
        sims = [stack.enter_context(start_sim(tiny_model_dir, port=free_port(), log_dir=log_dir,
                                              extra_args=["--time-scale", "0"])) for _ in range(N_SIMS)]
        args = ["gateway", *sum((["--endpoint", f"127.0.0.1:{s.port}"] for s in sims), []), "--model", "tiny"]
        yield stack.enter_context(run_lanterna(args, log_dir, min_ready=N_SIMS))
