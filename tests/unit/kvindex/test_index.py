"""KVIndex: store/remove/clear, tiers, shared storage, LRU bound, per-model/LoRA keys."""

from __future__ import annotations

import pytest

from lanterna.kvindex.hashing import block_keys, root_key
from lanterna.kvindex.index import KVIndex, TierWeights

BS = 4
TOKS = list(range(100, 132))  # 8 blocks


def mk(**kw: object) -> KVIndex:
    ix = KVIndex(**kw)  # type: ignore[arg-type]
    for e in ("a", "b", "c"):
        ix.add_endpoint(e, "m")
    return ix


def test_keys_chain_and_differ_by_model_and_lora() -> None:
    k = block_keys(TOKS, BS, root_key("m"))
    assert len(k) == 8 and len(set(k)) == 8
    assert block_keys(TOKS[:8], BS, root_key("m")) == k[:2]
    assert block_keys(TOKS, BS, root_key("m", "lora1"))[0] != k[0]
    assert block_keys(TOKS, BS, root_key("other"))[0] != k[0]
    # same block content after a different prefix gets a different key
    assert block_keys([1, 2, 3, 4] + TOKS[4:8], BS, root_key("m"))[1] != k[1]


@pytest.mark.parametrize(
    ("a_blocks", "b_blocks", "want_a", "want_b"),
    [(8, 2, 8.0, 2.0), (0, 3, 0.0, 3.0), (5, 5, 5.0, 5.0)],
    ids=["longer-wins", "one-empty", "tie"],
)
def test_match_counts_consecutive_blocks(a_blocks: int, b_blocks: int, want_a: float, want_b: float) -> None:
    ix = mk()
    if a_blocks:
        ix.store("a", list(range(1, a_blocks + 1)), None, TOKS[: a_blocks * BS], BS)
    if b_blocks:
        ix.store("b", list(range(1, b_blocks + 1)), None, TOKS[: b_blocks * BS], BS)
    got = ix.match("m", None, TOKS + [7, 7], ["a", "b", "c", "zz"])
    assert got == {"a": want_a, "b": want_b, "c": 0.0, "zz": 0.0}


def test_match_stops_at_hole_and_resolves_parent() -> None:
    ix = mk()
    ix.store("a", [1, 2], None, TOKS[:8], BS)
    ix.store("a", [3, 4], 2, TOKS[8:16], BS)  # extends via parent hash 2
    assert ix.match("m", None, TOKS, ["a"]) == {"a": 4.0}
    ix.remove("a", [2])
    assert ix.match("m", None, TOKS, ["a"]) == {"a": 1.0}
    ix.store("a", [9], 77, TOKS[16:20], BS)  # unknown parent: counted, ignored
    assert ix.counters.num_unresolved_parent == 1


def test_lora_and_model_isolation() -> None:
    ix = mk()
    ix.store("a", [1, 2], None, TOKS[:8], BS, lora="l1")
    assert ix.match("m", None, TOKS, ["a"]) == {"a": 0.0}
    assert ix.match("m", "l1", TOKS, ["a"]) == {"a": 2.0}
    assert ix.match("unknown-model", None, TOKS, ["a"]) == {"a": 0.0}


def test_tier_weights_and_offload_resolution() -> None:
    ix = mk()
    ix.store("a", [1, 2, 3, 4], None, TOKS[:16], BS)
    ix.store("a", [3, 4], None, [], BS, medium="CPU")  # token-less: resolved through the map
    ix.remove("a", [3, 4], "GPU")  # evicted from GPU, still on CPU
    assert ix.match("m", None, TOKS, ["a"]) == {"a": pytest.approx(2 + 2 * 0.8)}
    ix.remove("a", [3, 4], "CPU")
    assert ix.match("m", None, TOKS, ["a"]) == {"a": 2.0}
    assert ix.num_blocks("a") == 2


def test_shared_storage_credits_every_mount() -> None:
    ix = KVIndex(weights=TierWeights(storage=0.5))
    ix.add_endpoint("a", "m", storage="nfs1")
    ix.add_endpoint("b", "m", storage="nfs1")
    ix.add_endpoint("c", "m")
    ix.store("a", [1, 2], None, TOKS[:8], BS)
    ix.store("a", [1, 2], None, [], BS, medium="SHARED_STORAGE")
    assert ix.match("m", None, TOKS, ["a", "b", "c"]) == {"a": 2.0, "b": 1.0, "c": 0.0}
    ix.clear_endpoint("a")  # GPU gone; the shared files stay
    assert ix.match("m", None, TOKS, ["a", "b", "c"]) == {"a": 1.0, "b": 1.0, "c": 0.0}


def test_clear_and_remove_endpoint_leave_others_intact() -> None:
    ix = mk()
    ix.store("a", [1, 2], None, TOKS[:8], BS)
    ix.store("b", [5, 6], None, TOKS[:8], BS)
    ix.clear_endpoint("a")
    assert ix.match("m", None, TOKS, ["a", "b"]) == {"a": 0.0, "b": 2.0}
    ix.remove_endpoint("b")
    assert len(ix) == 0
    ix.add_endpoint("d", "m")  # reuses b's slot: must start empty
    assert ix.match("m", None, TOKS, ["d"]) == {"d": 0.0}


def test_lru_bound_is_hard_and_counts_evictions() -> None:
    ix = mk(capacity=64)
    toks = list(range(4 * 200))
    for i in range(200):
        ix.store("a", [i + 1], i or None, toks[i * BS : (i + 1) * BS], BS)
        assert len(ix) <= 64
    assert ix.counters.num_keys_evicted >= 136
    assert ix.match("m", None, toks, ["a"]) == {"a": 0.0}  # oldest (prefix) blocks went first


def test_map_bound_per_endpoint_keeps_index_consistent() -> None:
    ix = mk(map_capacity=8)
    toks = list(range(4 * 40))
    ix.store("a", list(range(1, 41)), None, toks, BS)
    assert ix.num_blocks("a") <= 8
    assert len(ix) <= 8  # keys no endpoint holds are dropped


def test_block_size_from_events_wins_and_mismatch_is_dropped() -> None:
    ix = mk()
    ix.set_block_size("m", BS)
    ix.store("a", [1], None, TOKS[:8], 8)
    assert ix.counters.num_block_size_mismatch == 1 and len(ix) == 0
    assert ix.block_size_for("m") == BS


def reference_match(ix: KVIndex, toks: list[int], eps: list[str]) -> dict[str, float]:
    """Brute force: per endpoint, walk blocks, credit the best tier holding each, stop at the first miss."""
    w = ix.weights
    keys = block_keys(toks, BS, ix.root("m", None))
    out = {}
    for e in eps:
        total = 0.0
        for k in keys:
            credit = [wt for t, wt in ((0, w.gpu), (1, w.cpu), (2, w.storage)) if ix.holds(e, k, t)]
            if not credit:
                break
            total += max(credit)
        out[e] = total
    return out


@pytest.mark.parametrize("seed", range(12), ids=lambda s: f"seed{s}")
def test_match_equals_brute_force(seed: int) -> None:
    import random

    rng = random.Random(seed)
    offload = seed % 3 != 0  # a third of the cases exercise the GPU-only fast path
    weights = TierWeights(cpu=0.7, storage=0.3) if seed % 2 else TierWeights(gpu=0.5, cpu=0.9, storage=0.2)
    ix = KVIndex(weights=weights, capacity=10_000)
    eps = [f"e{i}" for i in range(6)]
    for i, e in enumerate(eps):
        ix.add_endpoint(e, "m", storage="nfs" if i % 2 else None)
    prompts = [[rng.randrange(8) for _ in range(4 * rng.randrange(1, 12))] for _ in range(4)]
    h = 1
    for _ in range(60):
        e = rng.choice(eps)
        p = rng.choice(prompts)
        n = len(p) // BS
        hs = list(range(h, h + n))
        h += n
        ix.store(e, hs, None, p, BS)
        if offload and rng.random() < 0.5:
            ix.store(e, hs[: rng.randrange(n + 1)], None, [], BS, medium=rng.choice(["CPU", "SHARED_STORAGE"]))
        if rng.random() < 0.4:
            ix.remove(e, [rng.choice(hs)], rng.choice(["GPU", "CPU", "SHARED_STORAGE"]) if offload else "GPU")
    for p in prompts:
        got = ix.match("m", None, p, eps)
        want = reference_match(ix, p, eps)
        assert got == pytest.approx(want), (got, want)


def test_array_tokens_hash_like_lists() -> None:
    from array import array

    assert block_keys(array("I", TOKS), BS, 5) == block_keys(TOKS, BS, 5)
    ix = mk()
    ix.store("a", [1, 2], None, TOKS[:8], BS)
    assert ix.match("m", None, array("I", TOKS), ["a"]) == {"a": 2.0}


def test_shared_storage_events_from_several_replicas_resolve_through_the_mount() -> None:
    ix = KVIndex(weights=TierWeights(cpu=0.8, storage=0.5))
    for e in ("a", "b"):
        ix.add_endpoint(e, "m", storage="fs")
    ix.add_endpoint("c", "m", storage="other-fs")
    ix.store("a", [1, 2, 3], None, TOKS[:12], BS)  # a computed 3 blocks
    ix.store("a", [3], None, [], BS, medium="CPU")  # ... evicted block 3 from GPU, wrote it through
    ix.store("a", [3], None, [], BS, medium="SHARED_STORAGE")
    ix.remove("a", [3], "GPU")
    # a: 2 GPU blocks then CPU; b only mounts the storage a wrote; c mounts another one
    assert ix.match("m", None, TOKS, ["a", "b", "c"]) == {"a": pytest.approx(2.8), "b": 0.0, "c": 0.0}
    ix.store("b", [1, 2], None, TOKS[:8], BS)  # b loads blocks 1-2 (from anywhere): GPU
    assert ix.match("m", None, TOKS, ["b"]) == {"b": pytest.approx(2.5)}  # + a's shared block 3
    # b's storage LRU evicts block 3, which b never held: resolved through a, cleared for the whole mount
    ix.remove("b", [3], "SHARED_STORAGE")
    assert ix.counters.num_unresolved_hash == 0
    assert ix.match("m", None, TOKS, ["a", "b"]) == {"a": pytest.approx(2.8), "b": 2.0}
    ix.store("b", [3], None, [], BS, medium="SHARED_STORAGE")  # b rewrites it (token-less, via a)
    assert ix.match("m", None, TOKS, ["b"]) == {"b": pytest.approx(2.5)}
    ix.remove("c", [3], "SHARED_STORAGE")  # another mount cannot resolve a's hashes
    assert ix.counters.num_unresolved_hash == 1


def test_two_storage_mounts_are_credited_apart() -> None:
    ix = KVIndex(weights=TierWeights(storage=0.5))
    for e, mount in (("a", "fs1"), ("b", "fs1"), ("c", "fs2"), ("d", "fs2")):
        ix.add_endpoint(e, "m", storage=mount)
    ix.store("a", [1, 2], None, TOKS[:8], BS)
    ix.store("a", [1, 2], None, [], BS, medium="SHARED_STORAGE")
    ix.store("c", [11], None, TOKS[:4], BS)
    ix.store("c", [11], None, [], BS, medium="SHARED_STORAGE")
    ix.remove("a", [1, 2], "GPU")
    ix.remove("c", [11], "GPU")
    assert ix.match("m", None, TOKS, ["a", "b", "c", "d"]) == {"a": 1.0, "b": 1.0, "c": 0.5, "d": 0.5}
    ix.remove_endpoint("a")  # the writer leaves: its files stay on the mount for b
    assert ix.match("m", None, TOKS, ["b", "c"]) == {"b": 1.0, "c": 0.5}
