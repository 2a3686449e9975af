"""``RoutingState``: what the routing steps read and update, with no transport in it.

The HTTP gateway's ``Gateway`` extends it with its I/O owners (pools, pollers); an ext_proc picker would build
one the same way. Pool saturation is computed after each scrape and cached: flow control reads it on every
admission.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from lanterna.clock import Clock, MonotonicClock
from lanterna.config.model import LanternaConfig
from lanterna.endpoints.store import EndpointStore
from lanterna.endpoints.types import Endpoint
from lanterna.kvindex.index import KVIndex
from lanterna.kvindex.tokenization import TokenizerPool
from lanterna.obs.metrics import GatewayMetrics
from lanterna.routing.flow import FlowController
from lanterna.routing.retries import Breakers
from lanterna.scheduler import Scheduler

# WVA saturation thresholds (PROTOCOLS.md section 7), used to decide when flow control queues.
_SAT_KV = 0.80
_SAT_WAITING = 5


@dataclass(slots=True)
class RoutingState:
    cfg: LanternaConfig
    store: EndpointStore
    scheduler: Scheduler  # replaced in one assignment by a config reload; calls keep the one they started with
    metrics: GatewayMetrics
    breakers: Breakers
    rng: random.Random
    clock: Clock = field(default_factory=MonotonicClock)
    flow: FlowController | None = None
    kv_index: KVIndex | None = None
    tokenizer: TokenizerPool | None = None  # set when precise routing tokenizes prompts
    saturated: bool = False  # cached by refresh_saturation(); flow control reads it on every admission

    def pool_saturated(self) -> bool:
        """The cached pool saturation flag (O(1): called on every admission)."""
        return self.saturated

    def refresh_saturation(self, _ep: Endpoint | None = None) -> None:
        """Recompute the flag after a scrape; wake queued requests when it clears."""
        was, self.saturated = self.saturated, self.compute_saturation()
        if was and not self.saturated and self.flow is not None:
            self.flow.poke()

    def compute_saturation(self) -> bool:
        """True when every ready endpoint is saturated (KV >= 80% or >= 5 waiting), from fresh metrics."""
        now = self.clock.now()
        stale = self.cfg.endpoints.stale_after_s
        seen = False
        for ep in self.store.all():
            if not ep.healthy:
                continue
            m = ep.metrics
            if now - m.scraped_at > stale:
                return False  # no fresh view: do not hold requests back on guesses
            seen = True
            if m.kv_cache_usage < _SAT_KV and m.num_waiting < _SAT_WAITING:
                return False
        return seen

    def ready(self) -> bool:
        """Whether any endpoint can take a request now (``/ready``)."""
        return any(e.healthy for e in self.store.all())
