"""Which endpoint sent a KV-event message, from its topic (pure), for a socket that many publishers share.

In llm-d's precise-routing wiring the router owns one SUB socket (``kvEventsConfig.zmqEndpoint``, bound at
``tcp://*:5557``) and every vLLM pod's publisher connects to it, so the socket no longer tells who spoke: the
topic does. vLLM's topic is free text; llm-d's guides set ``kv@<pod-ip>@<model>`` and Lanterna's sim and
charts set ``kv@<ip>:<port>@<model>``. Both resolve here:

- ``kv@<host>:<port>@<model>`` names the endpoint ``<host>:<port>`` exactly;
- ``kv@<host>@<model>`` names the endpoint on that host; when a pod serves several data-parallel ranks (one
  endpoint per port), the message's ``data_parallel_rank`` picks the rank-th lowest port.

Resolutions are cached per (topic, rank) and the cache is dropped whenever the registered set changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TOPIC_PREFIX = "kv@"


@dataclass(frozen=True, slots=True)
class Topic:
    host: str
    port: int | None
    model: str


def parse_topic(topic: str) -> Topic | None:
    """``kv@10.0.0.5:8000@llama`` -> Topic('10.0.0.5', 8000, 'llama'); None when it is not of that shape."""
    if not topic.startswith(TOPIC_PREFIX):
        return None
    addr, sep, model = topic[len(TOPIC_PREFIX):].partition("@")
    if not sep or not addr:
        return None
    if addr.startswith("["):  # [v6]:port or [v6]
        host, _, rest = addr.partition("]")
        host += "]"
        port_s = rest[1:] if rest.startswith(":") else ""
    elif addr.count(":") == 1:
        host, _, port_s = addr.partition(":")
    else:  # a bare IPv4/name, or a bare IPv6 without brackets
        host, port_s = (addr, "") if addr.count(":") == 0 else (f"[{addr}]", "")
    if port_s and not port_s.isdigit():
        return None
    return Topic(host, int(port_s) if port_s else None, model)


def _split(endpoint_id: str) -> tuple[str, int | None]:
    host, sep, port = endpoint_id.rpartition(":")
    if not sep or not port.isdigit() or (host.count(":") and not host.startswith("[")):
        return endpoint_id, None
    return host, int(port)


@dataclass(slots=True)
class TopicRouter:
    """Registered endpoint ids (``host:port``) and the topic -> endpoint resolution over them."""

    max_cache: int = 4096
    _by_host: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    _ids: set[str] = field(default_factory=set)
    _cache: dict[tuple[bytes, int | None], str | None] = field(default_factory=dict)

    def add(self, endpoint_id: str) -> None:
        if endpoint_id in self._ids:
            return
        self._ids.add(endpoint_id)
        host, port = _split(endpoint_id)
        self._by_host.setdefault(host, []).append((port if port is not None else -1, endpoint_id))
        self._by_host[host].sort()
        self._cache.clear()

    def remove(self, endpoint_id: str) -> None:
        if endpoint_id not in self._ids:
            return
        self._ids.discard(endpoint_id)
        host, _ = _split(endpoint_id)
        left = [e for e in self._by_host.get(host, []) if e[1] != endpoint_id]
        if left:
            self._by_host[host] = left
        else:
            self._by_host.pop(host, None)
        self._cache.clear()

    def needs_rank(self, topic: bytes) -> bool:
        """True when the topic names a host with several endpoints and no port (the caller reads the rank)."""
        t = parse_topic(topic.decode(errors="replace"))
        return t is not None and t.port is None and len(self._by_host.get(t.host, ())) > 1

    def resolve(self, topic: bytes, rank: int | None = None) -> str | None:
        key = (topic, rank)
        if key in self._cache:
            return self._cache[key]
        t = parse_topic(topic.decode(errors="replace"))
        eid: str | None = None
        if t is not None:
            if t.port is not None:
                cand = f"{t.host}:{t.port}"
                eid = cand if cand in self._ids else None
            else:
                eps = self._by_host.get(t.host, [])
                idx = rank or 0
                eid = eps[idx][1] if 0 <= idx < len(eps) else None
        if len(self._cache) >= self.max_cache:
            self._cache.clear()
        self._cache[key] = eid
        return eid
