"""P/D transfer timing per link kind and the prefill side's KV leases."""

from __future__ import annotations

import pytest

from lanterna.sim.kv_link import KVLeases, make_link


@pytest.mark.parametrize(("kind", "secs"), [("nvlink", 50e-6 + 1e9 / 400e9), ("rdma", 1e-3 + 1e9 / 40e9),
                                            ("tcp", 5e-3 + 1e9 / 2.5e9)], ids=["nvlink", "rdma", "tcp"])
def test_transfer_time_is_setup_plus_bytes_over_bandwidth(kind: str, secs: float) -> None:
    assert make_link(kind).transfer_s(1e9) == pytest.approx(secs)


def test_overrides_and_errors() -> None:
    link = make_link("tcp", bandwidth_bps=1e9, setup_s=0.0)
    assert link.transfer_s(5e8) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="known: nvlink, rdma, tcp"):
        make_link("carrier-pigeon")
    with pytest.raises(ValueError):
        make_link("rdma", bandwidth_bps=0)


def test_lease_is_taken_once() -> None:
    leases = KVLeases(capacity_blocks=100)
    leases.grant([0, 1, 2], now=0.0)
    assert leases.take([0, 1, 2], now=1.0)
    assert not leases.take([0, 1, 2], now=1.0)  # read already: freed
    assert leases.num_blocks == 0


def test_lease_expires_after_ttl() -> None:
    leases = KVLeases(capacity_blocks=100, ttl_s=10.0)
    leases.grant([5, 6], now=0.0)
    assert not leases.take([5, 6], now=10.5)
    assert leases.num_expired == 1 and len(leases) == 0


def test_oldest_lease_is_evicted_when_memory_is_needed() -> None:
    leases = KVLeases(capacity_blocks=5)
    leases.grant([0, 1, 2], now=0.0)
    leases.grant([3, 4, 5], now=1.0)  # 6 blocks > 5: the first lease goes
    assert leases.num_evicted == 1
    assert not leases.take([0, 1, 2], now=2.0)
    assert leases.take([3, 4, 5], now=2.0)


def test_unknown_or_mismatched_pulls_fail() -> None:
    leases = KVLeases(capacity_blocks=10)
    leases.grant([7, 8], now=0.0)
    assert not leases.take(None, now=0.0) and not leases.take([9], now=0.0)
    assert not leases.take([7], now=0.0)  # a different block list than was granted
