"""Client authentication and authorisation: pure logic (no aiohttp, no clocks, no I/O).

``keys`` hashes and looks up API keys; ``principal`` says who a caller is and what it may ask for
(``effective_priority``, ``effective_fairness``); ``ratelimit`` holds per-key token buckets driven by an
injected ``now``. Loading keys from files, env and Kubernetes secrets is ``lanterna.auth.source``; the
aiohttp middleware that applies all this is ``lanterna.gateway.auth``.
"""

from lanterna.auth.keys import KeyRing, generate_key, hash_key
from lanterna.auth.principal import (
    ANONYMOUS_TENANT,
    Principal,
    effective_fairness,
    effective_priority,
)
from lanterna.auth.ratelimit import RateLimiter, TokenBucket

__all__ = [
    "ANONYMOUS_TENANT",
    "KeyRing",
    "Principal",
    "RateLimiter",
    "TokenBucket",
    "effective_fairness",
    "effective_priority",
    "generate_key",
    "hash_key",
]
