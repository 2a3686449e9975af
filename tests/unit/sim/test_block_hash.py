"""The simulator's block hash: chained, seeded, isolating adapters and salts, full 64-bit range."""

from __future__ import annotations

from lanterna.sim.block_hash import block_extra_keys, hash_blocks, seed_for

TOKENS = list(range(64))


def test_chaining_from_a_parent_equals_hashing_from_the_start() -> None:
    seed = seed_for(0)
    whole = hash_blocks(TOKENS, 16, 0, 4, None, seed)
    tail = hash_blocks(TOKENS, 16, 2, 4, whole[1], seed)
    assert tail == whole[2:]
    assert len(set(whole)) == 4


def test_hash_depends_on_prefix_not_just_block_tokens() -> None:
    seed = seed_for(0)
    a = hash_blocks([1] * 16 + [7] * 16, 16, 0, 2, None, seed)
    b = hash_blocks([2] * 16 + [7] * 16, 16, 0, 2, None, seed)
    assert a[1] != b[1]


def test_seed_lora_and_salt_change_every_block() -> None:
    base = hash_blocks(TOKENS, 16, 0, 4, None, seed_for(0))
    for other in (
        hash_blocks(TOKENS, 16, 0, 4, None, seed_for(1)),
        hash_blocks(TOKENS, 16, 0, 4, None, seed_for(0), lora_name="l1"),
        hash_blocks(TOKENS, 16, 0, 4, None, seed_for(0), cache_salt="s"),
    ):
        assert set(base).isdisjoint(other)
    assert hash_blocks(TOKENS, 16, 0, 4, None, seed_for(0)) == base  # deterministic


def test_values_span_unsigned_64_bits() -> None:
    hs = hash_blocks(list(range(16 * 256)), 16, 0, 256, None, seed_for(0))
    assert all(0 <= h < 2**64 for h in hs)
    assert any(h >= 2**63 for h in hs) and any(h < 2**63 for h in hs)


def test_extra_keys_lora_everywhere_salt_on_first_block_only() -> None:
    assert block_extra_keys(0, "l", "s") == ("l", "s")
    assert block_extra_keys(1, "l", "s") == ("l",)
    assert block_extra_keys(0, None, None) == ()
