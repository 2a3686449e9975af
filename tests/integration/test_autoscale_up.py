"""``lanterna up --autoscale --min-replicas 0``: sims started and stopped by the live autoscaling loop.

One run, in order: a request sent at zero replicas waits for the cold start and gets a correct answer; a load
that saturates the replica (max 2 running per sim, constant step time) adds a replica; when the load stops the
pool goes back to zero; every request got a 200 (none lost, none refused). Short intervals and windows keep it
to seconds; 2 sims at most.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from lanterna.autoscale.signals import samples
from tests.integration.test_gateway_support import GatewayProc, run_lanterna

pytestmark = pytest.mark.integration

MODEL = "sim-model"
COLD_START_S = 1.0
BODY = {"model": MODEL, "prompt": "count to ten", "max_tokens": 20}


async def _gauge(http: aiohttp.ClientSession, g: GatewayProc, name: str) -> float:
    async with http.get(g.url + "/metrics") as r:
        return sum(v for _, v in samples(await r.text(), (name,)))


async def _ready_pods(http: aiohttp.ClientSession, g: GatewayProc) -> int:
    return int(await _gauge(http, g, "inference_pool_ready_pods"))


async def _until(http: aiohttp.ClientSession, g: GatewayProc, want: int, timeout_s: float) -> float:
    """Seconds until the gateway has ``want`` ready endpoints (polls its /metrics: another process)."""
    t0 = time.monotonic()
    while await _ready_pods(http, g) != want:
        assert time.monotonic() - t0 < timeout_s, f"never {want} ready:\n{g.log_tail()}"
        await asyncio.sleep(0.1)
    return time.monotonic() - t0


async def _complete(http: aiohttp.ClientSession, g: GatewayProc) -> tuple[int, dict[str, object]]:
    async with http.post(g.url + "/v1/completions", json=BODY) as r:
        return r.status, await r.json()


async def test_up_autoscale_from_zero_up_and_back_to_zero(tmp_path: Path) -> None:
    args = ["up", "--autoscale", "--min-replicas", "0", "--max-replicas", "2", "--sim-model", MODEL,
            "--cold-start", str(COLD_START_S), "--interval", "0.2", "--scale-to-zero-after", "1.5",
            "--scale-down-window", "0.5", "--scale-down-delay", "0.5", "--scale-period", "0.2",
            "--sim-arg=--timing", "--sim-arg=constant", "--sim-arg=--max-num-seqs", "--sim-arg=2",
            "--no-kv-events", "--log-format", "json"]
    with run_lanterna(args, tmp_path, min_ready=0) as g:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            assert await _ready_pods(http, g) == 0
            # 1. at zero: held in flow control through the cold start, then served
            t0 = time.monotonic()
            status, body = await _complete(http, g)
            waited = time.monotonic() - t0
            assert status == 200, body
            assert body["usage"]["completion_tokens"] == 20  # type: ignore[index]
            assert waited >= COLD_START_S
            assert await _ready_pods(http, g) == 1

            # 2. load rises: 12 clients against 2 running slots per sim -> waiting >= 5 -> a second replica
            statuses: list[int] = []
            stop = asyncio.Event()

            async def client() -> None:
                while not stop.is_set():
                    statuses.append((await _complete(http, g))[0])

            clients = [asyncio.create_task(client()) for _ in range(12)]
            await _until(http, g, 2, timeout_s=20)
            stop.set()
            await asyncio.gather(*clients)

            # 3. load stops: idle past scale-to-zero-after -> zero replicas (drained first)
            await _until(http, g, 0, timeout_s=20)
            assert statuses and set(statuses) == {200}, statuses  # none lost, none refused
            dropped = await _gauge(http, g, "lanterna_flow_control_rejected_requests_total")
            assert dropped == 0
