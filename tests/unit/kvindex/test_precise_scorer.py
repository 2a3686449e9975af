"""The ``precise-prefix-cache-scorer`` plugin over a real KVIndex (llm-d parameters accepted)."""

from __future__ import annotations

import pytest

from lanterna.endpoints.types import Endpoint
from lanterna.errors import ConfigError
from lanterna.kvindex.index import KVIndex
from lanterna.scheduler.framework.interfaces import SchedulerServices
from lanterna.scheduler.framework.registry import build
from lanterna.scheduler.framework.types import SchedRequest

TOKS = list(range(100, 132))  # 8 blocks of 4
LLMD_PARAMS = {
    "blockSize": 4,
    "indexerConfig": {"tokenProcessorConfig": {"blockSize": 4, "hashSeed": "42"},
                      "kvBlockIndexConfig": {"inMemoryConfig": {"size": 1000}}},
    "kvEventsConfig": {"zmqEndpoint": "tcp://*:5557", "topicFilter": "kv@", "concurrency": 4},
}


def setup() -> tuple[KVIndex, list[Endpoint]]:
    ix = KVIndex()
    eps = [Endpoint(id=e, address=e) for e in ("a:1", "b:1")]
    for e in eps:
        ix.add_endpoint(e.id, "m")
    ix.store("a:1", [1, 2, 3, 4, 5, 6], None, TOKS[:24], 4)
    ix.store("b:1", [7, 8], None, TOKS[:8], 4, medium="GPU")
    return ix, eps


def test_scores_are_matched_over_total_blocks() -> None:
    ix, eps = setup()
    s = build("precise-prefix-cache-scorer", "p", LLMD_PARAMS, SchedulerServices(kv_index=ix))
    req = SchedRequest("r1", "m", token_ids=TOKS + [1, 2])
    assert s.score(req, eps) == {"a:1": 6 / 8, "b:1": 2 / 8}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("index", "tokens"),
    [(None, TOKS), ("ix", None), ("ix", [1, 2, 3])],
    ids=["no-index", "no-tokens", "shorter-than-a-block"],
)
def test_without_inputs_everyone_scores_zero(index: str | None, tokens: list[int] | None) -> None:
    ix, eps = setup()
    s = build("precise-prefix-cache-scorer", "p", {}, SchedulerServices(kv_index=ix if index else None))
    assert s.score(SchedRequest("r", "m", token_ids=tokens), eps) == {}  # type: ignore[attr-defined]


def test_unknown_parameter_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        build("precise-prefix-cache-scorer", "p", {"blokSize": 4}, SchedulerServices())


def test_second_profile_reuses_per_endpoint_matches() -> None:
    ix, eps = setup()
    calls: list[list[str]] = []
    real = ix.match

    def counting(model, lora, toks, ids):  # type: ignore[no-untyped-def]
        calls.append(list(ids))
        return real(model, lora, toks, ids)

    ix.match = counting  # type: ignore[method-assign]
    s = build("precise-prefix-cache-scorer", "p", {}, SchedulerServices(kv_index=ix))
    req = SchedRequest("r", "m", token_ids=TOKS)
    assert s.score(req, eps[:1]) == {"a:1": 6 / 8}  # type: ignore[attr-defined]
    assert s.score(req, eps) == {"a:1": 6 / 8, "b:1": 2 / 8}  # type: ignore[attr-defined]
    assert calls == [["a:1"], ["b:1"]]
