"""Precise routing wired into the real gateway app (in process): config reaches the index, the block size
comes from the scraped ``cache_config_info`` before any event, a gap is replayed from the configured
ROUTER, shared storage is mounted as configured, and ``lanterna_kvindex_*`` appear on ``/metrics``."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
import zmq.asyncio

from lanterna.config.model import LanternaConfig
from lanterna.endpoints.types import Endpoint
from lanterna.gateway.app import build_app, create_gateway, serve
from lanterna.kvindex.tokenization import TokenizerPool
from lanterna.protocol.kv_events import BlockStored
from tests.conftest import free_port
from tests.integration.test_kv_events_zmq import Publisher
from tests.unit.gateway.fake_upstream import FakeUpstream

pytestmark = pytest.mark.integration
EPP = {
    "apiVersion": "llm-d.ai/v1alpha1",
    "kind": "EndpointPickerConfig",
    "plugins": [{"type": "precise-prefix-cache-scorer"}, {"type": "max-score-picker"}],
    "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "precise-prefix-cache-scorer"},
                                                           {"pluginRef": "max-score-picker"}]}],
}
PROMPT = "The gateway keys prompts by their token blocks. " * 12


def _config(up: FakeUpstream, pub: Publisher) -> LanternaConfig:
    return LanternaConfig.model_validate({
        "gateway": {"log_format": "text"},
        "endpoints": {"static": [{"address": up.address, "models": ["m"], "kv_events": pub.endpoint}],
                      "scrape_interval_s": 0.05},
        "scheduler": EPP,
        "kvindex": {"max_keys": 5000, "map_capacity": 700, "tokenizer": "default",
                    "tier_weights": {"gpu": 1.0, "cpu": 0.5, "storage": 0.25},
                    "replay_endpoints": {up.address: f"tcp://127.0.0.1:{pub.replay_port}"},
                    "storage": {up.address: "nfs-a"}},
    })


async def test_gateway_wires_config_block_size_replay_storage_and_metrics() -> None:
    ctx = zmq.asyncio.Context()
    pub = Publisher(ctx, replay=True)
    replays = asyncio.create_task(pub.serve_replays())
    up = await FakeUpstream(models=["m"]).start()
    pool = TokenizerPool({"m": None})
    gw = create_gateway(_config(up, pub))
    ix: Any = gw.kv_index
    assert ix.capacity == 5000 and ix.map_capacity == 700
    assert (ix.weights.gpu, ix.weights.cpu, ix.weights.storage) == (1.0, 0.5, 0.25)
    port = free_port()
    runner = await serve(build_app(gw), "127.0.0.1", port)
    eid = up.address
    try:
        async with aiohttp.ClientSession() as http:
            ep = gw.store.get(eid)
            assert ep is not None and gw.scraper is not None
            assert await gw.scraper.scrape_once(ep) and ep.metrics.block_size == 16
            assert ix.block_size_for("m") is None  # no event yet
            async with http.post(f"http://127.0.0.1:{port}/v1/completions",
                                 json={"model": "m", "prompt": PROMPT, "max_tokens": 1}) as r:
                assert r.status == 200
            assert ix.block_size_for("m") == 16  # from vllm:cache_config_info, before any event

            toks = await pool.tokenize_prompt("m", PROMPT)
            assert toks is not None and len(toks) >= 48
            mgr: Any = gw.kv_events
            # the prompt's blocks (seq 0) are lost on the wire; the first message seen is at seq > 0,
            # a gap: the configured ROUTER replays everything from seq 0
            n = len(toks) // 16
            await pub.send(BlockStored(list(range(1, n + 1)), None, toks[: n * 16], 16), skip=True)
            async with asyncio.timeout(10):
                while mgr.last_seq(eid) < 0:
                    await pub.send(BlockStored([900_000 + pub.seq], None, [7] * 16, 16))
                    try:
                        await mgr.wait_applied(eid, 0, timeout_s=0.2)
                    except TimeoutError:
                        pass
            assert ix.match("m", None, toks, [eid]) == {eid: float(n)}
            assert mgr.applier.counters.num_replays >= 1 and pub.num_replays_served >= 1

            # a second gap mid-stream is replayed too, and the shared storage mount comes from config
            before = mgr.applier.counters.num_replays
            await pub.send(BlockStored([n + 1], n, [5] * 16, 16), skip=True)
            s = await pub.send(BlockStored([1], None, [], 16, medium="SHARED_STORAGE"))
            await mgr.wait_applied(eid, s)
            assert mgr.applier.counters.num_replays == before + 1
            assert ix.match("m", None, list(toks[: n * 16]) + [5] * 16, [eid]) == {eid: float(n + 1)}
            assert ix._eps[eid].storage == "nfs-a"

            async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                text = await r.text()
            assert "lanterna_kvindex_keys " in text
            assert "lanterna_kvindex_replays_total" in text
            assert f'lanterna_kvindex_endpoint_blocks{{endpoint="{eid}"}}' in text
            assert "lanterna_kvindex_tokenize_requests_total 1.0" in text
    finally:
        await runner.cleanup()
        replays.cancel()
        await up.close()
        pool.close()
        pub.close()
        ctx.destroy(linger=0)
    assert gw.kv_events is not None and not gw.kv_events.endpoints  # type: ignore[attr-defined]


async def _applied(mgr: Any, pub: Publisher, eid: str, event: BlockStored) -> None:
    """Publish until the subscriber (a ZMQ slow joiner) has applied one message from ``pub``."""
    async with asyncio.timeout(10):
        while mgr.last_seq(eid) < 0:
            await pub.send(event)
            try:
                await mgr.wait_applied(eid, 0, timeout_s=0.2)
            except TimeoutError:
                pass


async def test_endpoints_added_and_removed_after_startup_subscribe_and_unsubscribe() -> None:
    ctx = zmq.asyncio.Context()
    pub_a, pub_b = Publisher(ctx), Publisher(ctx)
    up_a = await FakeUpstream(models=["m"]).start()
    up_b = await FakeUpstream(models=["m"]).start()
    cfg = LanternaConfig.model_validate({
        "gateway": {"log_format": "text"},
        "endpoints": {"static": [{"address": up_a.address, "models": ["m"], "kv_events": pub_a.endpoint}]},
        "scheduler": EPP, "kvindex": {"tokenizer": "default"},
    })
    gw = create_gateway(cfg)
    runner = await serve(build_app(gw), "127.0.0.1", free_port())
    mgr: Any = gw.kv_events
    ix: Any = gw.kv_index
    b = up_b.address
    try:
        assert mgr.endpoints == [up_a.address]
        # discovered later, with no models listed: the gateway learns them from /v1/models, then subscribes
        await gw.add_endpoint(Endpoint(id=b, address=b, kv_events_endpoint=pub_b.endpoint))
        assert sorted(mgr.endpoints) == sorted([up_a.address, b])
        ep = gw.store.get(b)
        assert ep is not None and ep.healthy and "m" in ep.models
        assert gw.upstreams is not None and gw.upstreams._idle.get(b)  # keep-alive pool pre-opened
        await _applied(mgr, pub_b, b, BlockStored([1, 2], None, list(range(32)), 16))
        assert ix.num_blocks(b) == 2 and ix.num_blocks(up_a.address) == 0

        await gw.remove_endpoint(b)
        assert mgr.endpoints == [up_a.address] and ix.num_blocks(b) == 0
        assert gw.store.get(b) is None
    finally:
        await runner.cleanup()
        await up_a.close()
        await up_b.close()
        pub_a.close()
        pub_b.close()
        ctx.destroy(linger=0)
