"""Scheduler config hot reload through the real gateway: valid changes swap, invalid ones keep the old config."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import yaml

from tests.unit.gateway.conftest import gateway_for

BODY = {"model": "m", "prompt": "hello", "max_tokens": 2}


def _epp(*types: str) -> dict:
    return {"apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig",
            "plugins": [{"type": t} for t in types],
            "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": t} for t in types]}]}


def _write(path: Path, text: str, tick: list[int]) -> None:
    path.write_text(text)
    tick[0] += 1  # a distinct mtime even on coarse-timestamp filesystems
    os.utime(path, ns=(tick[0] * 10**9, tick[0] * 10**9))


def _sample(h, name: str, **labels: str) -> float | None:
    return h.gw.metrics.registry.get_sample_value(name, labels or None)


async def test_valid_change_swaps_and_invalid_change_keeps_the_old_scheduler(upstreams, tmp_path: Path) -> None:
    x = await upstreams()
    path, tick = tmp_path / "epp.yaml", [1_000]
    _write(path, yaml.safe_dump(_epp("queue-scorer")), tick)
    async with gateway_for([x], {"scheduler": str(path), "gateway": {"scheduler_reload_s": 0.02}}) as h:
        reloader = h.gw.reloader
        first = h.gw.scheduler
        assert set(first.plugins) >= {"queue-scorer"} and "kv-cache-utilization-scorer" not in first.plugins

        pending = reloader.next_result()
        _write(path, yaml.safe_dump(_epp("kv-cache-utilization-scorer", "random-picker")), tick)
        result = await asyncio.wait_for(pending, 5)
        assert result.ok and result.message == ""
        second = h.gw.scheduler
        assert second is not first and "kv-cache-utilization-scorer" in second.plugins
        assert (await h.post("/v1/completions", BODY)).status == 200
        assert _sample(h, "lanterna_gateway_scheduler_config_reloads_total", result="success") == 1

        for bad, why in ((_epp("no-such-scorer"), "no-such-scorer"),
                         ("plugins: [unclosed", "not valid YAML (line 1, column 19)")):
            pending = reloader.next_result()
            _write(path, bad if isinstance(bad, str) else yaml.safe_dump(bad), tick)
            result = await asyncio.wait_for(pending, 5)
            assert not result.ok and why in result.message
            assert h.gw.scheduler is second  # the old config keeps serving
            assert (await h.post("/v1/completions", BODY)).status == 200
        assert _sample(h, "lanterna_gateway_scheduler_config_reloads_total", result="failure") == 2
        assert _sample(h, "lanterna_gateway_scheduler_config_last_reload_success") == 0

        pending = reloader.next_result()  # fixing the file is picked up
        _write(path, yaml.safe_dump(_epp("queue-scorer")), tick)
        assert (await asyncio.wait_for(pending, 5)).ok
        assert h.gw.scheduler is not second
        assert _sample(h, "lanterna_gateway_scheduler_config_last_reload_success") == 1


async def test_unchanged_file_is_not_reloaded_and_inline_config_is_not_watched(upstreams, tmp_path: Path) -> None:
    x = await upstreams()
    path = tmp_path / "epp.yaml"
    path.write_text(yaml.safe_dump(_epp("queue-scorer")))
    async with gateway_for([x], {"scheduler": str(path), "gateway": {"scheduler_reload_s": 3600}}) as h:
        before = h.gw.scheduler
        assert await h.gw.reloader.check() is None and h.gw.scheduler is before
    async with gateway_for([x], {"scheduler": _epp("queue-scorer")}) as h:
        assert h.gw.reloader is None
