"""What the live loop reads, as numbers: the gateway's and the model servers' Prometheus text -> ``Demand``.

Pure (text in, dataclasses out; time arrives as an argument), so the parsing and the rate arithmetic are unit
tested without sockets. Names are the wire's: the gateway's GAIE metrics (``inference_objective_request_total``,
``inference_objective_running_requests``, ``inference_extension_flow_control_queue_size``) and vLLM's
(``vllm:kv_cache_usage_perc``, ``vllm:num_requests_waiting`` / ``_running``, ``vllm:prompt_tokens_total``,
``vllm:generation_tokens_total``). Only the few wanted lines are split; histograms are skipped by prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from lanterna.autoscale.types import Demand

GW_REQUESTS = "inference_objective_request_total"
GW_RUNNING = "inference_objective_running_requests"  # counted from admission: includes the queued ones
GW_QUEUED = "inference_extension_flow_control_queue_size"
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
TOKENS = ("vllm:prompt_tokens_total", "vllm:generation_tokens_total")
_GW_WANTED = (GW_REQUESTS, GW_RUNNING, GW_QUEUED)
_EP_WANTED = (*KV_USAGE, WAITING, RUNNING, *TOKENS)


def samples(text: str, wanted: tuple[str, ...]) -> Iterator[tuple[str, float]]:
    """``(name, value)`` of each sample whose name is in ``wanted`` (labels dropped; summed by the caller)."""
    for line in text.splitlines():
        if not line.startswith(wanted):
            continue
        brace = line.find("{")
        if brace >= 0:
            name, rest = line[:brace], line[line.rfind("}") + 1:]
        else:
            name, _, rest = line.partition(" ")
        if name not in wanted:
            continue  # a longer name with a wanted prefix (``..._created``)
        parts = rest.split()
        if parts:
            try:
                yield name, float(parts[0])
            except ValueError:
                continue


@dataclass(frozen=True, slots=True)
class GatewaySignals:
    requests_total: float  # arrivals ever (counter)
    num_queued: int  # in flow control, not dispatched
    num_running: int  # admitted and not finished (queued included)

    @property
    def num_in_flight(self) -> int:
        return max(0, self.num_running - self.num_queued)


@dataclass(frozen=True, slots=True)
class EndpointSignals:
    kv_cache_usage: float
    num_waiting: int
    num_running: int
    tokens_total: float  # prompt + generated tokens processed (counters)


def parse_gateway(text: str) -> GatewaySignals:
    acc = dict.fromkeys(_GW_WANTED, 0.0)
    for name, value in samples(text, _GW_WANTED):
        acc[name] += value
    return GatewaySignals(acc[GW_REQUESTS], int(acc[GW_QUEUED]), int(acc[GW_RUNNING]))


def parse_endpoint(text: str) -> EndpointSignals:
    """One model server's gauges and token counters, summed over its engines (data-parallel ranks)."""
    kv_sum, kv_n, waiting, running, tokens = 0.0, 0, 0.0, 0.0, 0.0
    for name, value in samples(text, _EP_WANTED):
        if name in KV_USAGE:
            kv_sum += value
            kv_n += 1
        elif name == WAITING:
            waiting += value
        elif name == RUNNING:
            running += value
        else:
            tokens += value
    return EndpointSignals(kv_sum / kv_n if kv_n else 0.0, int(waiting), int(running), tokens)


@dataclass(slots=True)
class DemandMeter:
    """Counters -> rates between two observations. Token counters are kept per endpoint, so a replica that
    appears (counting from its own start) or goes away (its counter vanishes) never reads as negative work."""

    _last_at: float | None = None
    _last_requests: float = 0.0
    _last_tokens: dict[str, float] = field(default_factory=dict)
    last_request_at: float | None = None

    def update(self, now: float, gw: GatewaySignals, tokens: dict[str, float]) -> Demand:
        """``tokens``: endpoint id -> its token counter, for the endpoints scraped this time."""
        prev_at = self._last_at
        new_requests = gw.requests_total - self._last_requests if prev_at is not None else 0.0
        if prev_at is None and gw.requests_total > 0:
            self.last_request_at = now  # traffic before we looked: not idle since forever
        if new_requests > 0 or gw.num_running > 0:
            self.last_request_at = now
        seen = [k for k in tokens if k in self._last_tokens]  # endpoints with a previous reading
        processed = sum(max(0.0, tokens[k] - self._last_tokens[k]) for k in seen)
        dt = now - prev_at if prev_at is not None else 0.0
        self._last_at, self._last_requests, self._last_tokens = now, gw.requests_total, dict(tokens)
        known = dt > 0 and bool(seen)
        return Demand(
            arrival_rate_rps=max(0.0, new_requests) / dt if dt > 0 else 0.0,
            num_queued=gw.num_queued,
            num_in_flight=gw.num_in_flight,
            processed_tokens_per_s=processed / dt if known else None,
            last_request_at=self.last_request_at,
        )
