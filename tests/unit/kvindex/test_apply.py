"""EventApplier: captured vLLM events, sequence gaps/restarts/replay, malformed input."""

from __future__ import annotations

import json

import msgspec
import pytest

from lanterna.kvindex.apply import EventApplier, Verdict
from lanterna.kvindex.index import KVIndex
from lanterna.protocol.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVEventBatch,
    encode_payload,
    encode_seq,
)
from tests.conftest import REFERENCE

BS = 4
TOKS = list(range(100, 132))
TOPIC = b"kv@127.0.0.1:8000@m"


def msg(seq: int, *events: object, encoding: str = "map") -> list[bytes]:
    return [TOPIC, encode_seq(seq), encode_payload(KVEventBatch(1.0, list(events), 0), encoding)]  # type: ignore[arg-type]


def stored(hashes: list[int], parent: int | None, toks: list[int]) -> BlockStored:
    return BlockStored(hashes, parent, toks, BS)


def mk(replay: bool = False) -> EventApplier:
    ap = EventApplier(KVIndex())
    ap.add_endpoint("a", "m", replay=replay)
    ap.add_endpoint("b", "m")
    return ap


def score(ap: EventApplier, ep: str = "a") -> float:
    return ap.index.match("m", None, TOKS, [ep])[ep]


def test_captured_vllm_stream_indexes_every_prompt() -> None:
    lines = [json.loads(x) for x in (REFERENCE / "kv_events.jsonl").read_text().splitlines()]
    ap = EventApplier(KVIndex())
    ap.add_endpoint("127.0.0.1:8000", "tiny")
    prompts = []
    for r in lines:
        payload = msgspec.msgpack.encode(r["decoded"])
        v = ap.ingest("127.0.0.1:8000", [r["topic"].encode(), encode_seq(r["seq"]), payload])
        assert v is Verdict.APPLIED
        for ev in r["decoded"][1]:
            if ev["parent_block_hash"] is None and ev["lora_name"] is None:
                prompts.append(ev["token_ids"])
    assert ap.index.block_size_for("tiny") == 32
    assert not ap.counters.malformed and ap.index.counters.num_unresolved_parent == 0
    for toks in prompts:
        got = ap.index.match("tiny", None, toks, ["127.0.0.1:8000"])["127.0.0.1:8000"]
        assert got == len(toks) // 32
    lora = next(ev for r in lines for ev in r["decoded"][1] if ev["lora_name"] == "lora1")
    assert ap.index.match("tiny", "lora1", lora["token_ids"], ["127.0.0.1:8000"])["127.0.0.1:8000"] == 3


@pytest.mark.parametrize("encoding", ["map", "array"])
def test_both_encodings_store_remove_clear(encoding: str) -> None:
    ap = mk()
    ap.ingest("a", msg(0, stored([1, 2], None, TOKS[:8]), encoding=encoding))
    assert score(ap) == 2
    ap.ingest("a", msg(1, BlockRemoved([2]), encoding=encoding))
    assert score(ap) == 1
    ap.ingest("a", msg(2, AllBlocksCleared(), encoding=encoding))
    assert score(ap) == 0


def test_gap_without_replay_drops_endpoint_entries_only() -> None:
    ap = mk()
    ap.ingest("a", msg(0, stored([1, 2], None, TOKS[:8])))
    ap.ingest("b", msg(0, stored([1, 2], None, TOKS[:8])))
    assert ap.ingest("a", msg(5, stored([9], None, TOKS[:4]))) is Verdict.APPLIED
    assert ap.counters.num_gaps == 1
    assert score(ap, "a") == 1 and score(ap, "b") == 2


def test_restart_clears_and_restarts_numbering() -> None:
    ap = mk()
    for s in range(3):
        ap.ingest("a", msg(s, stored([s + 1], s or None, TOKS[s * BS : (s + 1) * BS])))
    assert score(ap) == 3
    ap.ingest("a", msg(0, stored([50], None, TOKS[:4])))
    assert ap.counters.num_restarts == 1 and score(ap) == 1
    ap.ingest("a", msg(1, stored([51], 50, TOKS[4:8])))
    assert score(ap) == 2


def test_gap_with_replay_fills_hole_then_skips_overlap() -> None:
    ap = mk(replay=True)
    ap.ingest("a", msg(0, stored([1], None, TOKS[:4])))
    assert ap.ingest("a", msg(3, stored([4], 3, TOKS[12:16]))) is Verdict.REPLAY
    for s in (1, 2, 3):  # the replay socket sends from last+1 up to its newest
        ap.apply_replayed("a", s, msg(s, stored([s + 1], s, TOKS[s * BS : (s + 1) * BS]))[2])
    ap.finish_replay("a")
    assert score(ap) == 4 and ap.counters.num_resyncs_without_replay == 0
    assert ap.ingest("a", msg(3, stored([4], 3, TOKS[12:16]))) is Verdict.DUPLICATE
    assert ap.ingest("a", msg(4, stored([5], 4, TOKS[16:20]))) is Verdict.APPLIED
    assert score(ap) == 5


def test_failed_replay_falls_back_to_resync() -> None:
    ap = mk(replay=True)
    ap.ingest("a", msg(0, stored([1, 2], None, TOKS[:8])))
    assert ap.ingest("a", msg(4, stored([9], None, TOKS[:4]))) is Verdict.REPLAY
    ap.finish_replay("a")  # replay socket never answered
    assert ap.counters.num_resyncs_without_replay == 1 and score(ap) == 1


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([TOPIC, encode_seq(0)], "frame_count"),
        ([TOPIC, b"\x00", b"\x90"], "seq_frame"),
        ([TOPIC, encode_seq(0), b"\xc1\xff garbage"], "payload"),
        ([TOPIC, encode_seq(0), msgspec.msgpack.encode({"not": "a batch"})], "payload"),
    ],
    ids=["two-frames", "short-seq", "garbage-msgpack", "wrong-shape"],
)
def test_malformed_is_counted_and_harmless(frames: list[bytes], reason: str) -> None:
    ap = mk()
    ap.ingest("b", msg(0, stored([1, 2], None, TOKS[:8])))
    assert ap.ingest("a", frames) is Verdict.MALFORMED
    assert ap.counters.malformed[reason] == 1
    assert score(ap, "b") == 2


def test_unknown_event_type_costs_only_itself() -> None:
    ap = mk()
    good = msgspec.to_builtins(stored([1, 2], None, TOKS[:8]))
    payload = msgspec.msgpack.encode([1.0, [{"type": "Teleported", "x": 1}, good], 0])
    assert ap.ingest("a", [TOPIC, encode_seq(0), payload]) is Verdict.APPLIED
    assert ap.counters.malformed["unknown_event"] == 1 and score(ap) == 2


def test_bad_token_ids_never_match_and_non_ints_are_counted() -> None:
    """A one-block event's raw ``token_ids`` is hashed unchecked: a bad id only yields a key no prompt
    produces. Ids that are not ints in a multi-block event fail to decode and are counted."""
    ap = mk()
    ap.ingest("a", msg(0, BlockStored([1], None, [-1, 2, 3, 4], BS)))
    assert len(ap.index) == 1 and ap.index.match("m", None, [0, 2, 3, 4], ["a"])["a"] == 0
    ap.ingest("a", msg(1, BlockStored([2, 3], None, ["x"] * 8, BS)))  # type: ignore[list-item]
    assert ap.counters.malformed["event_fields"] == 1 and len(ap.index) == 1
    ap.ingest("a", msg(2, stored([4], None, TOKS[:4])))
    assert ap.index.match("m", None, TOKS, ["a"])["a"] == 1


def test_two_replicas_fed_same_events_agree() -> None:
    import random

    rng = random.Random(7)
    reps = [mk() for _ in range(2)]
    for r in reps:
        r.index.capacity = 50
    seqs = {"a": 0, "b": 0}
    prompts = [[rng.randrange(50) for _ in range(32)] for _ in range(6)]
    for _ in range(300):
        ep = rng.choice("ab")
        p = rng.choice(prompts)
        n = rng.randrange(1, 9)
        hs = [rng.randrange(1 << 64) for _ in range(n)]
        ev = stored(hs, None, p[: n * BS]) if rng.random() < 0.8 else BlockRemoved([rng.randrange(1 << 64)])
        frames = msg(seqs[ep], ev)
        seqs[ep] += 1
        for r in reps:
            r.ingest(ep, frames)
        q = rng.choice(prompts)
        assert reps[0].index.match("m", None, q, "ab") == reps[1].index.match("m", None, q, "ab")


def test_reconnect_then_unexpected_seq_is_a_restart() -> None:
    ap = mk()
    ap.ingest("a", msg(0, stored([1, 2], None, TOKS[:8])))
    ap.mark_reconnected("a")
    ap.ingest("a", msg(1, stored([3], 2, TOKS[8:12])))  # same publisher, next seq: kept
    assert ap.counters.num_restarts == 0 and score(ap) == 3
    ap.mark_reconnected("a")
    ap.ingest("a", msg(7, stored([9], None, TOKS[:4])))  # new engine, first messages missed
    assert ap.counters.num_restarts == 1 and score(ap) == 1
