"""Topic -> endpoint resolution for the shared KV-event socket (llm-d's bound zmqEndpoint)."""

from __future__ import annotations

import pytest

from lanterna.kvindex.topics import Topic, TopicRouter, parse_topic


@pytest.mark.parametrize(("topic", "want"), [
    ("kv@10.0.0.5:8000@llama", Topic("10.0.0.5", 8000, "llama")),
    ("kv@10.0.0.5@meta/llama-3@v2", Topic("10.0.0.5", None, "meta/llama-3@v2")),
    ("kv@[fd00::5]:8000@m", Topic("[fd00::5]", 8000, "m")),
    ("kv@fd00::5@m", Topic("[fd00::5]", None, "m")),
    ("kv@10.0.0.5:http@m", None),
    ("other@10.0.0.5@m", None),
    ("kv@", None),
], ids=["ip-port", "ip-only", "v6-port", "v6-bare", "bad-port", "prefix", "empty"])
def test_parse_topic(topic: str, want: Topic | None) -> None:
    assert parse_topic(topic) == want


def test_router_exact_host_and_rank() -> None:
    r = TopicRouter()
    for eid in ("10.0.0.5:8001", "10.0.0.5:8000", "10.0.0.6:8000", "[fd00::5]:8000"):
        r.add(eid)
    assert r.resolve(b"kv@10.0.0.6:8000@m") == "10.0.0.6:8000"
    assert r.resolve(b"kv@10.0.0.6:9999@m") is None
    assert r.resolve(b"kv@10.0.0.6@m") == "10.0.0.6:8000"
    assert r.resolve(b"kv@[fd00::5]@m") == "[fd00::5]:8000"
    assert r.needs_rank(b"kv@10.0.0.5@m") and not r.needs_rank(b"kv@10.0.0.6@m")
    assert [r.resolve(b"kv@10.0.0.5@m", k) for k in (None, 0, 1, 2)] == [
        "10.0.0.5:8000", "10.0.0.5:8000", "10.0.0.5:8001", None]
    r.remove("10.0.0.6:8000")
    assert r.resolve(b"kv@10.0.0.6@m") is None  # the cache was dropped with the endpoint
    r.add("10.0.0.6:8000")
    assert r.resolve(b"kv@10.0.0.6:8000@m") == "10.0.0.6:8000"
