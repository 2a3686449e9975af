"""One simulated replica's P/D side (``lanterna sim --role``), in real time over real sockets.

- Prefill (role ``prefill`` or ``both``): a finished ``do_remote_decode`` request's blocks are held in a lease
  (``kv_link.KVLeases``) named by the ``remote_block_ids`` its response returns. A ``decode``-role replica
  holds nothing and returns no ``kv_transfer_params``: the caller falls back to local prefill.
- Decode: a request carrying ``do_remote_prefill`` first pulls the lease from ``remote_host:remote_port``
  (``POST /lanterna/kv/pull``, a sim-only route standing in for the NIXL read), then waits the link's transfer
  time, and only then enters the engine, which treats the prompt as computed. A failed pull (prefiller
  unreachable, lease unknown/expired/evicted, or an injected failure at ``--kv-transfer-failure-rate``) falls
  back to a local prefill; ``lanterna_sim_kv_transfers_total{outcome}`` counts every pull by outcome.
"""

from __future__ import annotations

import logging
import random

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from lanterna.sim.kv_link import KVLeases, KVLink
from lanterna.sim.types import RemotePrefill

log = logging.getLogger(__name__)
PULL_PATH = "/lanterna/kv/pull"
OUTCOMES = ("ok", "injected", "unreachable", "not_held")


class SimPD:
    def __init__(self, role: str, link: KVLink, leases: KVLeases, registry: CollectorRegistry, *,
                 failure_rate: float = 0.0, seed: int = 0, pull_timeout_s: float = 5.0) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"KV transfer failure rate must be in [0, 1], got {failure_rate}")
        self.role = role
        self.link = link
        self.leases = leases
        self.failure_rate = failure_rate
        self._rng = random.Random(seed)
        self._timeout = aiohttp.ClientTimeout(total=pull_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        c = Counter("lanterna_sim_kv_transfers", "P/D KV pulls by this (decode) replica, by outcome; anything but "
                    "ok fell back to a local prefill.", ("outcome",), registry=registry)
        self.transfers = {o: c.labels(o) for o in OUTCOMES}

    @property
    def holds_kv(self) -> bool:
        return self.role != "decode"

    def hold(self, block_ids: list[int], now: float) -> None:
        self.leases.grant(block_ids, now)

    def take(self, block_ids: list[int] | None, now: float) -> bool:
        return self.leases.take(block_ids, now)

    async def pull(self, remote: RemotePrefill) -> str:
        """Read the prefill's blocks; the outcome (``ok`` or why not). Transfer time is not waited here."""
        if self.failure_rate > 0 and self._rng.random() < self.failure_rate:
            return self._count("injected")
        if remote.remote_host is None or remote.remote_port is None or not remote.remote_block_ids:
            return self._count("not_held")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        url = f"http://{remote.remote_host}:{remote.remote_port}{PULL_PATH}"
        try:
            async with self._session.post(url, json={"remote_block_ids": remote.remote_block_ids,
                                                     "remote_engine_id": remote.remote_engine_id}) as r:
                ok = r.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("kv_pull_failed", extra={"prefiller": url, "error": str(exc)})
            return self._count("unreachable")
        return self._count("ok" if ok else "not_held")

    def _count(self, outcome: str) -> str:
        self.transfers[outcome].inc()
        return outcome

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
