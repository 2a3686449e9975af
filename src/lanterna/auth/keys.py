"""API keys hashed at rest: ``sha256:<hex>`` of the key, looked up by hash, confirmed in constant time.

Why unsalted SHA-256 and not bcrypt/argon2: the keys are generated secrets with 256 bits of entropy
(``generate_key``), so a dictionary or brute-force attack on a leaked hash is hopeless whatever the hash
costs, while a slow hash would add milliseconds to every request. A per-key salt would also forbid the O(1)
lookup by hash. Human-chosen passwords would need a slow salted hash; do not use them as API keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping

from lanterna.auth.principal import Principal

HASH_PREFIX = "sha256:"
KEY_PREFIX = "lk-"  # recognisable in logs and secret scanners


def hash_key(key: str) -> str:
    """The at-rest form of a key: ``sha256:`` + 64 hex digits."""
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """A new random key (256 bits, URL-safe)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def normalise_hash(value: str) -> str:
    """Accept ``sha256:<hex>`` or bare hex; raise ``ValueError`` for anything else."""
    digest = value[len(HASH_PREFIX):] if value.startswith(HASH_PREFIX) else value
    digest = digest.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("a key hash must be sha256:<64 hex digits> (see `lanterna auth hash-key`)")
    return HASH_PREFIX + digest


class KeyRing:
    """Hash -> principal. Immutable once built: a reload builds a new ring and swaps it in one assignment."""

    __slots__ = ("_by_hash",)

    def __init__(self, entries: Mapping[str, Principal] | Iterable[tuple[str, Principal]] = ()) -> None:
        items = entries.items() if isinstance(entries, Mapping) else entries
        self._by_hash: dict[str, Principal] = {normalise_hash(h): p for h, p in items}

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, presented: str) -> Principal | None:
        """The principal for a presented key, or None. The dict probe is keyed by the hash (which reveals
        nothing usable about the key); ``compare_digest`` then confirms the match in constant time."""
        if not presented:
            return None
        h = hash_key(presented)
        found = self._by_hash.get(h)
        if found is None or not hmac.compare_digest(found.key_hash, h):
            return None
        return found

    def principals(self) -> list[Principal]:
        return list(self._by_hash.values())
