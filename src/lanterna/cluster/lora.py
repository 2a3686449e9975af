"""LoRA in the virtual cluster: which adapter each request names, engine slot settings, scraped LoRA state.

Kept apart from ``virtual.py`` so the event loop only gains a few calls. The adapter mix is a Zipf law over
``lora-00 .. lora-NN`` (rank 1 the hottest); a request of a session or prompt group keeps its key's adapter
(a tenant's app uses one adapter with one system prompt), others draw from the cluster's seeded stream.
"""

from __future__ import annotations

import bisect
import itertools
import random
from typing import Any

from lanterna.bench.config import ClusterTarget, LoraTarget
from lanterna.bench.workloads import WorkItem
from lanterna.endpoints.types import EndpointMetrics


class AdapterMix:
    """Draws the adapter of each request (None = base model); same seed and items -> same adapters."""

    def __init__(self, cfg: LoraTarget, seed: int) -> None:
        self.cfg = cfg
        self.names = [f"lora-{i:02d}" for i in range(cfg.num_adapters)]
        self._cum = list(itertools.accumulate(1.0 / (r ** cfg.zipf_s) for r in range(1, cfg.num_adapters + 1)))
        self._seed = seed
        self._rng = random.Random(seed)

    def _draw(self, rng: random.Random) -> str | None:
        if self.cfg.share < 1.0 and rng.random() >= self.cfg.share:
            return None
        i = bisect.bisect_right(self._cum, rng.random() * self._cum[-1])
        return self.names[min(i, len(self.names) - 1)]

    def pick(self, item: WorkItem) -> str | None:
        key = item.session if item.session is not None else (item.group if item.group >= 0 else None)
        if key is None:
            return self._draw(self._rng)
        return self._draw(random.Random(f"{self._seed}:{key}"))


def engine_lora_kwargs(c: ClusterTarget) -> dict[str, Any]:
    """``EngineConfig`` fields for ``c.lora`` (none without LoRA)."""
    if c.lora is None:
        return {}
    from lanterna.sim import get_profile
    from lanterna.sim.lora_slots import DEFAULT_LORA_OVERHEAD_S, profile_load_s

    load_s = c.lora.load_s
    if load_s is None:
        load_s = profile_load_s(get_profile(c.profile), c.lora.rank, bandwidth_bps=c.lora.bandwidth_gbps * 1e9,
                                overhead_s=DEFAULT_LORA_OVERHEAD_S)
    return {"max_loras": c.lora.max_loras, "lora_load_s": load_s}


def scrape_lora(m: EndpointMetrics, stats: Any) -> None:
    """Copy the engine's ``vllm:lora_requests_info`` state into the scraped metrics, as the scraper parses it."""
    m.max_lora = stats.max_loras
    m.running_lora_adapters = frozenset(stats.running_lora_adapters)
    m.waiting_lora_adapters = frozenset(stats.waiting_lora_adapters)


def lora_summary(endpoint_ids: list[str], engines: list[Any], placements: dict[str, set[str]]) -> dict[str, Any]:
    """Per replica: adapter loads (swaps) and evictions; per adapter: how many replicas it was sent to."""
    per = {}
    for eid, eng in zip(endpoint_ids, engines, strict=True):
        st = eng.stats()
        per[eid] = {"loads": st.num_lora_loads, "evictions": st.num_lora_evictions}
    loads = [v["loads"] for v in per.values()]
    reps = {a: len(e) for a, e in sorted(placements.items())}
    return {"per_replica": per, "loads_total": sum(loads), "loads_max": max(loads, default=0),
            "replicas_per_adapter": reps,
            "replicas_per_adapter_mean": sum(reps.values()) / len(reps) if reps else 0.0}
