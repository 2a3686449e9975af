"""Token buckets per principal, driven by an injected ``now`` (monotonic seconds): pure and testable.

A request is charged 1 from the key's request bucket when it arrives (before its body is read: floods are
refused cheaply) and ``prompt estimate + max_tokens`` from its token bucket at admission; a short bucket means
429 with ``Retry-After`` = seconds until enough refills. A refused charge spends nothing.

NOTE: the buckets live in one process. With ``--workers N`` each worker enforces its own buckets, so a key's
effective limit is N x its configured rate; ``per_process_share`` divides the configured rates by N so the
sum holds (exact when the kernel spreads connections evenly, approximately otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lanterna.auth.principal import Principal


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens/s up to ``capacity``; starts full."""

    rate: float
    capacity: float
    tokens: float = -1.0
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def wait_s(self, n: float, now: float) -> float:
        """Seconds until ``n`` tokens are available (0: now). Infinite when ``n`` exceeds the capacity."""
        self._refill(now)
        if n <= self.tokens:
            return 0.0
        if n > self.capacity or self.rate <= 0:
            return math.inf
        return (n - self.tokens) / self.rate

    def take(self, n: float) -> None:
        """Spend ``n`` after ``wait_s`` returned 0 at the same ``now``."""
        self.tokens -= n


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_s: float = 0.0
    reason: str = ""  # "requests" | "tokens" | "too-large"


_OK = Verdict(True)


class RateLimiter:
    """Buckets per key hash. Keys come from config, so the map is bounded by the key count; a reload keeps
    the buckets of keys whose limits did not change (nobody gets a fresh burst by touching the file)."""

    __slots__ = ("_buckets", "_share")

    def __init__(self, per_process_share: int = 1) -> None:
        self._buckets: dict[tuple[str, str], tuple[tuple[float, float], TokenBucket]] = {}
        self._share = max(1, per_process_share)

    def _bucket(self, key: str, kind: str, rate: float, capacity: float, now: float) -> TokenBucket:
        spec = (rate / self._share, max(1.0, capacity / self._share))
        held = self._buckets.get((key, kind))
        if held is None or held[0] != spec:
            held = (spec, TokenBucket(rate=spec[0], capacity=spec[1], updated=now))
            self._buckets[(key, kind)] = held
        return held[1]

    def take_request(self, p: Principal, now: float) -> Verdict:
        """Charge one request to ``p``'s request bucket (anonymous and unlimited principals always pass)."""
        if p.requests_per_s is None or p.anonymous:
            return _OK
        burst = p.burst if p.burst is not None else max(1, math.ceil(p.requests_per_s))
        bucket = self._bucket(p.key_hash, "requests", p.requests_per_s, burst, now)
        wait = bucket.wait_s(1, now)
        if wait > 0:
            return Verdict(False, wait, "requests")
        bucket.take(1)
        return _OK

    def take_tokens(self, p: Principal, num_tokens: int, now: float) -> Verdict:
        """Charge ``num_tokens`` (prompt estimate + max_tokens) to ``p``'s token bucket. A request larger than
        the whole bucket can never pass: reason ``too-large`` (the caller answers 429 without a useful wait)."""
        if p.tokens_per_min is None or p.anonymous:
            return _OK
        cap = p.token_burst if p.token_burst is not None else p.tokens_per_min
        bucket = self._bucket(p.key_hash, "tokens", p.tokens_per_min / 60.0, cap, now)
        wait = bucket.wait_s(num_tokens, now)
        if wait > 0:
            return Verdict(False, wait, "too-large" if math.isinf(wait) else "tokens")
        bucket.take(num_tokens)
        return _OK

    def retain(self, key_hashes: set[str]) -> None:
        """Drop the buckets of keys that no longer exist (after a reload)."""
        for k in [k for k in self._buckets if k[0] not in key_hashes]:
            del self._buckets[k]
