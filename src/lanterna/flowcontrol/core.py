"""Flow control decisions, synchronous and clock-driven, so the gateway and the virtual-time cluster share them.

Protocol (the caller owns waking): ``admit`` either grants a slot at once (state GRANTED), queues the request
(QUEUED) or drops it (DROPPED + ``drop_reason``). Every call that can change *other* entries (``admit``,
``release``, ``cancel``, ``dispatch``, ``expire_due``) returns them; the caller wakes each GRANTED one and fails
each DROPPED one. A GRANTED entry holds a slot until ``release(entry)``, whatever happens to its waiter.

Order of service: strict priority between bands (higher first); round-robin across fairness ids inside a band;
FCFS inside a fairness id (``ordering="slo-deadline"``: earliest SLO deadline first, see ``band.py``).
Dispatch needs ``in_flight < max_concurrency`` and ``saturated()`` false.
Shedding: a sheddable (priority < 0) arrival is dropped at once while saturated; with the queue full, an arrival
evicts the newest entry of the lowest sheddable band below its own priority, else is dropped itself.

Hold (scale from zero): while ``held`` is set (no replica to send to, one is starting) every arrival queues, none
is dropped for saturation, and nothing dispatches; TTL and the queue cap still apply. Whoever clears it calls
``dispatch()`` and starts what it grants.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

from lanterna.clock import Clock
from lanterna.flowcontrol.band import PriorityBand
from lanterna.flowcontrol.stats import FlowStats
from lanterna.flowcontrol.types import DropReason, EntryState, FlowConfig, FlowEntry, FlowRequest

_NONE: tuple[FlowEntry, ...] = ()
_QUEUED, _GRANTED, _DROPPED, _RELEASED = (
    EntryState.QUEUED,
    EntryState.GRANTED,
    EntryState.DROPPED,
    EntryState.RELEASED,
)


def _never() -> bool:
    return False


class FlowCore:
    """Queues keyed by (fairness id, priority) in strict priority bands, with TTL, capacity and shedding."""

    def __init__(self, config: FlowConfig, clock: Clock, saturated: Callable[[], bool] | None = None) -> None:
        self.config = config
        self.clock = clock
        self.saturated = saturated or _never
        self.in_flight = 0
        self.num_queued = 0
        self.held = False
        self._max_concurrency = config.max_concurrency
        self._edf = config.ordering == "slo-deadline"
        self._bands: dict[int, PriorityBand] = {}
        self._neg_priorities: list[int] = []  # ascending, i.e. highest priority first
        self._seq = 0
        self._admitted = 0
        self._dispatched = 0
        self._enqueued = 0
        self._wait_sum = 0.0
        self._drops: dict[DropReason, int] = dict.fromkeys(DropReason, 0)

    # -- the calls ---------------------------------------------------------------------------------------------

    def admit(self, request: FlowRequest) -> tuple[FlowEntry, Sequence[FlowEntry]]:
        """Grant, queue or drop ``request``; also returns other entries this changed (evicted or granted)."""
        now = self.clock.now()
        self._seq += 1
        self._admitted += 1
        ttl = request.ttl_s if request.ttl_s is not None else self.config.queue_ttl_s
        entry = FlowEntry(request, self._seq, now, now + ttl)
        if self.held:  # no replica yet: wait for one (the queue's TTL bounds the wait), never drop for saturation
            saturated = False
        elif self.in_flight < self._max_concurrency:
            saturated = self.saturated()
            if not saturated and not self.num_queued:  # the fast path: idle or under capacity, nobody waiting
                entry.state = _GRANTED
                entry.granted_at = now
                self.in_flight += 1
                self._dispatched += 1
                return entry, _NONE
        else:  # at our own limit a completion will come, so waiting makes sense, unless sheddable and saturated
            saturated = request.priority < 0 and self.saturated()
        if saturated:
            if request.priority < 0:
                return self._drop(entry, DropReason.SHED), _NONE
            if not self.in_flight:
                return self._drop(entry, DropReason.SATURATED), _NONE
        band = self._bands.get(request.priority)
        cap = self.config.max_queue_len_per_flow
        if cap is not None and band is not None and band.flow_len(request.fairness_id) >= cap:
            return self._drop(entry, DropReason.QUEUE_FULL), _NONE
        changed: list[FlowEntry] = []
        if self.num_queued >= self.config.max_queue_len:
            victim = self._eviction_victim(request.priority)
            if victim is None:
                return self._drop(entry, DropReason.QUEUE_FULL), _NONE
            self._unqueue(victim)
            changed.append(self._drop(victim, DropReason.EVICTED))
            band = self._bands.get(request.priority)
        if band is None:
            band = self._add_band(request.priority)
        band.push(entry)
        self.num_queued += 1
        self._enqueued += 1
        if not saturated and not self.held and self.in_flight < self._max_concurrency:
            # Saturation cleared without a poke: serve in order (maybe us; the caller sees our own state).
            changed.extend(e for e in self.dispatch() if e is not entry)
        return entry, changed

    def release(self, entry: FlowEntry) -> Sequence[FlowEntry]:
        """Free ``entry``'s slot (idempotent) and grant it to waiters; returns the entries granted."""
        if entry.state is not _GRANTED:
            return _NONE
        entry.state = _RELEASED
        self.in_flight -= 1
        return self.dispatch() if self.num_queued else _NONE

    def cancel(self, entry: FlowEntry) -> Sequence[FlowEntry]:
        """The waiter is gone: leave the queue, or give back a slot granted in the meantime."""
        if entry.state is _QUEUED:
            self._unqueue(entry)
            self._drop(entry, DropReason.CANCELLED)
            return _NONE
        return self.release(entry)

    def expire(self, entry: FlowEntry) -> bool:
        """Drop ``entry`` for TTL if it is still queued (the adapter's per-entry timer calls this)."""
        if entry.state is not _QUEUED:
            return False
        self._unqueue(entry)
        self._drop(entry, DropReason.TTL_EXPIRED)
        return True

    def expire_due(self, now: float | None = None) -> list[FlowEntry]:
        """Drop every queued entry whose deadline has passed (virtual-time drivers call this; O(queued))."""
        t = self.clock.now() if now is None else now
        due = [e for band in list(self._bands.values()) for e in band.entries() if e.deadline <= t]
        for e in due:
            self.expire(e)
        return due

    def dispatch(self) -> list[FlowEntry]:
        """Grant slots to queued entries in service order while capacity allows; returns them."""
        granted: list[FlowEntry] = []
        if not self.num_queued or self.held or self.in_flight >= self._max_concurrency or self.saturated():
            return granted
        now = self.clock.now()
        while True:
            band = self._bands[-self._neg_priorities[0]]
            entry = band.pop()
            assert entry is not None  # NOTE: empty bands are removed eagerly
            if not band:
                self._remove_band(band)
            self.num_queued -= 1
            entry.state = _GRANTED
            entry.granted_at = now
            self.in_flight += 1
            self._dispatched += 1
            self._wait_sum += now - entry.enqueued_at
            granted.append(entry)
            if not self.num_queued or self.in_flight >= self._max_concurrency or self.saturated():
                return granted

    # -- views -------------------------------------------------------------------------------------------------

    @property
    def blocked_by_saturation(self) -> bool:
        """Entries wait although a slot is free: only a saturation change (not a release) can start them."""
        return bool(self.num_queued) and self.in_flight < self._max_concurrency

    def stats(self) -> FlowStats:
        by_flow = {(fid, p): n for p, band in self._bands.items() for fid, n in band.flows().items()}
        return FlowStats(
            in_flight=self.in_flight,
            num_queued=self.num_queued,
            queued_by_priority={p: len(b) for p, b in self._bands.items()},
            queued_by_flow=by_flow,
            admitted_total=self._admitted,
            dispatched_total=self._dispatched,
            enqueued_total=self._enqueued,
            dropped={r.value: n for r, n in self._drops.items()},
            queue_wait_s_sum=self._wait_sum,
        )

    # -- internals ---------------------------------------------------------------------------------------------

    def _drop(self, entry: FlowEntry, reason: DropReason) -> FlowEntry:
        entry.state = _DROPPED
        entry.drop_reason = reason
        self._drops[reason] += 1
        return entry

    def _eviction_victim(self, priority: int) -> FlowEntry | None:
        if not self._neg_priorities:
            return None
        lowest = -self._neg_priorities[-1]
        if lowest >= 0 or lowest >= priority:
            return None
        return self._bands[lowest].newest()

    def _unqueue(self, entry: FlowEntry) -> None:
        band = self._bands[entry.request.priority]
        band.remove(entry)
        self.num_queued -= 1
        if not band:
            self._remove_band(band)

    def _add_band(self, priority: int) -> PriorityBand:
        band = self._bands[priority] = PriorityBand(priority, self._edf)
        bisect.insort(self._neg_priorities, -priority)
        return band

    def _remove_band(self, band: PriorityBand) -> None:
        del self._bands[band.priority]
        self._neg_priorities.remove(-band.priority)
