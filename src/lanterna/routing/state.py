"""``RoutingState``: what the routing steps read and update, with no transport in it.

The HTTP gateway's ``Gateway`` extends it with its I/O owners (pools, pollers); an ext_proc picker would build
one the same way. Pool saturation is computed after each scrape and cached: flow control reads it on every
admission.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from lanterna.clock import Clock, MonotonicClock
from lanterna.config.model import LanternaConfig
from lanterna.endpoints.store import EndpointStore
from lanterna.endpoints.types import Endpoint
from lanterna.flowcontrol import pool_saturated
from lanterna.kvindex.index import KVIndex
from lanterna.kvindex.tokenization import TokenizerPool
from lanterna.obs.access import AccessLog
from lanterna.obs.metrics import GatewayMetrics
from lanterna.routing.flow import FlowController
from lanterna.routing.retries import Breakers
from lanterna.scheduler import Scheduler


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
    access_log: AccessLog | None = None  # one line per request, written by ``core.complete`` / ``core.rejected``
    # Scale from zero: told (with the model) when a request must wait for a replica; the autoscaler deduplicates
    # (a starting replica is supply), so calling it for every held request is safe.
    on_hold: Callable[[str], None] | None = None

    def pool_saturated(self) -> bool:
        """The cached pool saturation flag (O(1): called on every admission)."""
        return self.saturated

    def refresh_saturation(self, _ep: Endpoint | None = None) -> None:
        """Recompute the flag after a scrape; wake queued requests when it clears."""
        was, self.saturated = self.saturated, self.compute_saturation()
        if was and not self.saturated and self.flow is not None:
            self.flow.poke()

    def compute_saturation(self) -> bool:
        """True when every ready endpoint is saturated, from fresh metrics: the rule the virtual cluster uses."""
        return pool_saturated(self.store.all(), self.clock.now(), self.cfg.endpoints.stale_after_s)

    def refresh_hold(self) -> None:
        """Scale from zero (``flowcontrol.hold_models`` set): flow control holds arrivals while no endpoint is
        ready, and dispatches the held ones as soon as one is. Call after any endpoint or health change."""
        flow = self.flow
        if flow is None or not self.cfg.flowcontrol.hold_models:
            return
        held = not self.ready()
        core = flow.core
        if core.held != held:
            core.held = held
            if not held:
                flow.poke()

    def ready(self) -> bool:
        """Whether any endpoint can take a request now (``/ready``)."""
        return any(e.healthy for e in self.store.all())
