"""Prefixes routed but not yet announced: what the precise index cannot know yet.

The KV-event index hears of a prompt's blocks only after the server's prefill step has stored them, so
for a few hundred milliseconds a second request with the same long prefix looks cold everywhere and is
sent elsewhere to recompute it (the cold-prefix duplication the well-lit cold-prefix scenario shows).
This map remembers, per in-flight request, coarse prefix keys (one per ``stride`` blocks) and which
endpoint it was sent to; a request's entries leave at ``remove`` (response complete). Memory is bounded
by ``max_keys`` (past it, new requests are not recorded: routing falls back to the index alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lanterna.endpoints.types import Endpoint
from lanterna.kvindex.hashing import chain_keys_from, root_key
from lanterna.scheduler.framework.types import SchedRequest

STATE_PREFIX_PENDING = "lanterna/prefix-match/pending"
"""``req.state`` key: ``PrefixMatch`` of prefixes in flight (written by ``cost-model-scorer``'s producer;
``no-hit-lru-scorer`` counts them as hits, so a group's second request is not spread as cold)."""

_STATE_KEYS = "lanterna/pending-prefix/keys"  # (stride tokens, keys so far, root) of this request
_MASK = (1 << 64) - 1
_STATE_ADDED = "lanterna/pending-prefix/added"  # (endpoint id, keys) recorded at add()


@dataclass(slots=True)
class PendingPrefixes:
    stride_blocks: int = 16
    max_keys: int = 200_000
    owners: dict[int, dict[str, int]] = field(default_factory=dict)  # key -> endpoint id -> refcount

    def _keys(self, req: SchedRequest, block_size: int, upto: int | None = None) -> list[int]:
        """The first ``upto`` (default all) stride keys of ``req``, computed lazily and kept in its state:
        a request whose first stride is not in flight hashes 256 tokens, not its whole prompt."""
        stride = block_size * self.stride_blocks
        got = req.state.get(_STATE_KEYS)
        if got is None or got[0] != stride:
            root = root_key(req.model, req.lora) ^ (hash(req.cache_salt) & _MASK if req.cache_salt else 0)
            got = req.state[_STATE_KEYS] = (stride, [], root)
        _, keys, root = got
        toks = req.token_ids or []
        total = len(toks) // stride
        want = total if upto is None else min(total, upto)
        if len(keys) < want:
            keys += chain_keys_from(toks, stride, keys[-1] if keys else root, len(keys), want)
        return keys if upto is None else keys[:want]

    def match(self, req: SchedRequest, block_size: int, candidates: list[Endpoint]) -> dict[str, float]:
        """Blocks of ``req``'s prefix in flight to each candidate (consecutive from the first block)."""
        run: dict[str, float] = {}
        if not self.owners or req.token_ids is None:
            return run
        alive = {e.id for e in candidates}
        i, chunk = 0, 1
        while True:
            keys = self._keys(req, block_size, i + chunk)
            if len(keys) <= i:
                break
            for k in keys[i:]:
                got = self.owners.get(k)
                if not got:
                    break
                kept = alive & got.keys()
                if not kept:
                    break
                if i and len(kept) < len(alive):
                    for eid in alive - kept:
                        run[eid] = float(i * self.stride_blocks)
                alive = kept
                i += 1
            else:
                chunk *= 4
                continue
            break
        if i:
            for eid in alive:
                run[eid] = float(i * self.stride_blocks)
        return run

    def add(self, req: SchedRequest, endpoint_id: str, block_size: int) -> None:
        if req.token_ids is None or len(self.owners) >= self.max_keys:
            return
        keys = self._keys(req, block_size)
        if not keys:
            return
        for k in keys:
            per = self.owners.setdefault(k, {})
            per[endpoint_id] = per.get(endpoint_id, 0) + 1
        req.state[_STATE_ADDED] = (endpoint_id, keys)

    def remove(self, req: SchedRequest) -> None:
        got = req.state.pop(_STATE_ADDED, None)
        if got is None:
            return
        eid, keys = got
        for k in keys:
            per = self.owners.get(k)
            if per is None or eid not in per:
                continue
            if per[eid] <= 1:
                del per[eid]
                if not per:
                    del self.owners[k]
            else:
                per[eid] -= 1

    def remove_endpoint(self, endpoint_id: str) -> None:
        for k in [k for k, per in self.owners.items() if per.pop(endpoint_id, None) is not None and not per]:
            del self.owners[k]
