"""Retry ordering and per-endpoint circuit breakers (pure: time comes in as ``now`` floats).

Retries happen only before the first byte reached the client: connect errors, first-byte timeouts and
5xx answers move the request to the next-best endpoint (4xx is the client's: never retried). A breaker
opens after ``failure_threshold`` consecutive failures, refuses traffic for ``open_s``, then lets exactly
one half-open probe through; the probe's outcome closes or re-opens it. A probe that ends without a verdict
(client gone, cancelled, a 5xx not yet judged) calls ``abandon()``: the slot frees, the state stays, so the
next request probes and a replica can never be stuck "probe in progress".

    closed --N failures--> open --open_s elapsed, one probe--> half_open --success--> closed
                             ^------------------------------------------ failure --'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lanterna.endpoints.types import Endpoint

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    failure_threshold: int = 5
    open_s: float = 5.0
    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probe_in_flight: bool = False

    def available(self, now: float) -> bool:
        """Whether a request may be sent now (does not claim the half-open probe)."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return now - self.opened_at >= self.open_s
        return not self.probe_in_flight

    def begin(self, now: float) -> None:
        """Called when a request is actually sent; claims the probe in half-open state."""
        if self.state == OPEN and now - self.opened_at >= self.open_s:
            self.state = HALF_OPEN
        if self.state == HALF_OPEN:
            self.probe_in_flight = True

    def on_success(self) -> None:
        self.state, self.failures, self.probe_in_flight = CLOSED, 0, False

    def abandon(self) -> None:
        """The attempt ended without a verdict on the endpoint: free the probe slot, keep the state."""
        self.probe_in_flight = False

    def on_failure(self, now: float) -> bool:
        """Record a failure; True when this failure opened the circuit."""
        self.failures += 1
        self.probe_in_flight = False
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.failure_threshold):
            self.state, self.opened_at = OPEN, now
            return True
        return False


class Breakers:
    """One breaker per endpoint id, created on first use; ``forget`` drops removed endpoints."""

    __slots__ = ("_threshold", "_open_s", "_by_id")

    def __init__(self, failure_threshold: int = 5, open_s: float = 5.0) -> None:
        self._threshold = failure_threshold
        self._open_s = open_s
        self._by_id: dict[str, CircuitBreaker] = {}

    def get(self, endpoint_id: str) -> CircuitBreaker:
        b = self._by_id.get(endpoint_id)
        if b is None:
            b = self._by_id[endpoint_id] = CircuitBreaker(self._threshold, self._open_s)
        return b

    def forget(self, endpoint_id: str) -> None:
        self._by_id.pop(endpoint_id, None)

    def allowed(self, candidates: list[Endpoint], now: float) -> list[Endpoint]:
        """Candidates whose circuit lets a request through; all of them if every circuit is open
        (better to try a doubtful endpoint than to fail a request that might succeed)."""
        if not self._by_id:
            return candidates
        ok = [e for e in candidates if (b := self._by_id.get(e.id)) is None or b.available(now)]
        return ok or candidates

    def is_open(self, endpoint_id: str) -> bool:
        b = self._by_id.get(endpoint_id)
        return b is not None and b.state != CLOSED

    def refuses(self, endpoint_id: str, now: float) -> bool:
        """Whether the breaker turns requests away now (open and not yet due for a probe, or probing)."""
        b = self._by_id.get(endpoint_id)
        return b is not None and not b.available(now)

    def reset(self, endpoint_id: str) -> None:
        """Health checks saw the endpoint come back: close its circuit without waiting for a request probe."""
        b = self._by_id.get(endpoint_id)
        if b is not None:
            b.on_success()


def attempt_order(
    picked: Iterable[Endpoint], candidates: Iterable[Endpoint], limit: int,
    load_key: Callable[[Endpoint], int] = lambda e: e.load.in_flight_requests,
) -> list[Endpoint]:
    """The scheduler's picks (best first), then the remaining candidates least-loaded first, at most
    ``limit`` endpoints, no duplicates."""
    order: list[Endpoint] = []
    seen: set[str] = set()
    for e in picked:
        if e.id not in seen:
            seen.add(e.id)
            order.append(e)
    if len(order) < limit:
        rest = sorted((e for e in candidates if e.id not in seen), key=load_key)
        order.extend(rest[: limit - len(order)])
    return order[:limit]


def retryable_status(status: int) -> bool:
    """5xx (503 included) before any byte reached the client may be the endpoint's fault: try another
    (the request's own fault when a second replica answers 5xx too; ``routing.core`` judges that)."""
    return status >= 500
