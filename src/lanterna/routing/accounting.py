"""Gateway-side load accounting on ``Endpoint.load`` (pure: no I/O, no clock).

Scraped metrics lag by 50-100 ms, so a burst would pile onto the replica that looked idle at the last
scrape; the gateway's own counters close that gap. One ``LoadTicket`` per dispatched request:

    acquire  -> in_flight_requests +1, prefill tokens +P, decode seqs +1, KV tokens +(P + max_tokens),
                in_flight_adapters[lora] +1 (LoRA requests: the placement scorer's view of adapters in use)
    first_token() -> prefill tokens -P          (the prompt has been prefilled)
    release()     -> everything still held      (stream end, error, client disconnect, cancellation)

NOTE: both releases are idempotent, and callers invoke ``release()`` in a ``finally`` block, so the
counters return to zero on every exit path (the tests check this under disconnects and upstream deaths).
"""

from __future__ import annotations

from lanterna.endpoints.types import Endpoint, EndpointLoad


class LoadTicket:
    __slots__ = ("endpoint", "_load", "_prefill", "_kv", "_prefill_held", "_held", "_lora")

    def __init__(self, endpoint: Endpoint, prompt_tokens: int, max_tokens: int, lora: str | None = None) -> None:
        load: EndpointLoad = endpoint.load
        self.endpoint = endpoint
        self._load = load
        self._prefill = prompt_tokens
        self._kv = prompt_tokens + max_tokens
        self._lora = lora
        if lora is not None:
            adapters = load.in_flight_adapters
            adapters[lora] = adapters.get(lora, 0) + 1
        load.in_flight_requests += 1
        load.in_flight_prefill_tokens += prompt_tokens
        load.in_flight_decode_seqs += 1
        load.in_flight_kv_tokens += self._kv
        self._prefill_held = True
        self._held = True

    @property
    def held(self) -> bool:
        return self._held

    def first_token(self) -> None:
        if self._prefill_held:
            self._prefill_held = False
            self._load.in_flight_prefill_tokens -= self._prefill

    def release(self) -> None:
        if not self._held:
            return
        self.first_token()
        self._held = False
        load = self._load
        load.in_flight_requests -= 1
        load.in_flight_decode_seqs -= 1
        load.in_flight_kv_tokens -= self._kv
        lora = self._lora
        if lora is not None:
            adapters = load.in_flight_adapters
            n = adapters.get(lora, 0) - 1
            if n > 0:
                adapters[lora] = n
            else:
                adapters.pop(lora, None)

    def __enter__(self) -> LoadTicket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
