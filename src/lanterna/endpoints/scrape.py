"""Poll each model server's ``GET /metrics`` every 50-100 ms and keep ``Endpoint.metrics`` fresh.

vLLM's exposition is large (hundreds of lines of histograms); we need five series, so a hand parser
that looks only at lines starting with the few names we want is ~20x cheaper than a full Prometheus
parse. ``scraped_at`` records freshness; consumers judge staleness with ``EndpointMetrics.age_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp

from lanterna.endpoints.tasks import EndpointTasks
from lanterna.endpoints.types import Endpoint, EndpointMetrics

log = logging.getLogger(__name__)

_RUNNING = ("vllm:num_requests_running",)
_WAITING = ("vllm:num_requests_waiting",)
_KV = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
_CACHE_INFO = "vllm:cache_config_info"
_LORA_INFO = "vllm:lora_requests_info"
_PC_QUERIES = "vllm:prefix_cache_queries_total"
_PC_HITS = "vllm:prefix_cache_hits_total"
# Line prefixes worth splitting; ``str.startswith(tuple)`` rejects the hundreds of histogram lines in C.
_WANTED = (*_RUNNING, *_WAITING, *_KV, _CACHE_INFO, _LORA_INFO, _PC_QUERIES, _PC_HITS)


def _labels(s: str) -> dict[str, str]:
    """Parse ``a="x",b="y"`` (values may hold escaped quotes and commas)."""
    out: dict[str, str] = {}
    i, n = 0, len(s)
    while i < n:
        eq = s.find("=", i)
        if eq < 0:
            break
        key = s[i:eq].strip().lstrip(",").strip()
        j = eq + 2  # skip ="
        buf = []
        while j < n and s[j] != '"':
            if s[j] == "\\" and j + 1 < n:
                j += 1
                buf.append({"n": "\n"}.get(s[j], s[j]))
            else:
                buf.append(s[j])
            j += 1
        out[key] = "".join(buf)
        i = j + 1
    return out


def _split(line: str) -> tuple[str, str, float] | None:
    """``name{labels} value [ts]`` -> (name, labels text, value)."""
    brace = line.find("{")
    if brace >= 0:
        close = line.rfind("}")
        name, labels, rest = line[:brace], line[brace + 1 : close], line[close + 1 :]
    else:
        name, _, rest = line.partition(" ")
        labels = ""
    parts = rest.split()
    if not parts:
        return None
    try:
        return name, labels, float(parts[0])
    except ValueError:
        return None


def _int_label(labels: dict[str, str], key: str) -> int | None:
    v = labels.get(key, "")
    return int(v) if v.isdigit() else None


def _names(v: str) -> frozenset[str]:
    return frozenset(x for x in (p.strip() for p in v.split(",")) if x)


def parse_metrics(text: str, into: EndpointMetrics, now: float) -> EndpointMetrics:
    """Update ``into`` from a vLLM exposition; sums across engines (data-parallel ranks)."""
    running = waiting = 0.0
    kv_sum, kv_n = 0.0, 0
    q = h = 0.0
    lora_ts = -1.0
    for line in text.splitlines():
        if not line.startswith(_WANTED):
            continue
        parsed = _split(line)
        if parsed is None:
            continue
        name, labels, value = parsed
        if name in _RUNNING:
            running += value
        elif name in _WAITING:
            waiting += value
        elif name in _KV:
            kv_sum += value
            kv_n += 1
        elif name == _PC_QUERIES:
            q += value
        elif name == _PC_HITS:
            h += value
        elif name == _CACHE_INFO:
            lab = _labels(labels)
            into.block_size = _int_label(lab, "block_size") or into.block_size
            into.num_gpu_blocks = _int_label(lab, "num_gpu_blocks") or into.num_gpu_blocks
            into.num_cpu_blocks = _int_label(lab, "num_cpu_blocks") or into.num_cpu_blocks
        elif name == _LORA_INFO and value >= lora_ts:  # several samples: the newest timestamp wins
            lora_ts = value
            lab = _labels(labels)
            into.max_lora = _int_label(lab, "max_lora") or 0
            into.running_lora_adapters = _names(lab.get("running_lora_adapters", ""))
            into.waiting_lora_adapters = _names(lab.get("waiting_lora_adapters", ""))
    into.num_running = int(running)
    into.num_waiting = int(waiting)
    into.kv_cache_usage = kv_sum / kv_n if kv_n else 0.0
    into.prefix_cache_queries = q
    into.prefix_cache_hits = h
    into.scraped_at = now
    return into


# GET ``path`` from ``address`` within ``timeout_s``: (status, body); raises OSError / TimeoutError.
Fetch = Callable[[str, str, float], Awaitable[tuple[int, bytes]]]


class MetricsScraper:
    """One polling task per endpoint; a failed scrape leaves the old snapshot (it simply ages).

    ``fetch``: a leaner GET than the aiohttp session (the gateway passes its upstream pools' ``get``): at the
    default 75 ms interval the scrapes are most of an idle gateway's CPU."""

    def __init__(self, session: aiohttp.ClientSession, interval_s: float = 0.075, timeout_s: float = 1.0,
                 on_scrape: Callable[[Endpoint], None] | None = None, fetch: Fetch | None = None) -> None:
        self._session = session
        self._fetch = fetch
        self._timeout_s = timeout_s
        self._on_scrape = on_scrape  # after every attempt (a failed one ages the snapshot): cached views refresh
        self._interval_s = interval_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._tasks = EndpointTasks("scrape")

    def watch(self, ep: Endpoint) -> None:
        if ep.id not in self._tasks:
            self._tasks.start(ep.id, self._poll(ep))

    def unwatch(self, endpoint_id: str) -> None:
        self._tasks.cancel(endpoint_id)

    async def scrape_once(self, ep: Endpoint) -> bool:
        if self._fetch is not None:
            try:
                status, body = await self._fetch(ep.address, "/metrics", self._timeout_s)
            except (OSError, TimeoutError):
                return False
            if status != 200:
                return False
            parse_metrics(body.decode("utf-8", "replace"), ep.metrics, time.monotonic())
            return True
        try:
            async with self._session.get(f"http://{ep.address}/metrics", timeout=self._timeout) as resp:
                if resp.status != 200:
                    return False
                text = await resp.text()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
        parse_metrics(text, ep.metrics, time.monotonic())
        return True

    async def _poll(self, ep: Endpoint) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.scrape_once(ep)
            if self._on_scrape is not None:
                self._on_scrape(ep)
            await asyncio.sleep(max(0.0, self._interval_s - (loop.time() - started)))

    async def close(self) -> None:
        await self._tasks.close()
