"""``lanterna sim``: the pure engine behind vLLM's HTTP API and KV-event publisher, in real time.

One driver task steps the engine while it has work: ``step(now)`` returns a duration, the driver sleeps
until ``step start + duration x time_scale`` on the loop clock and then delivers the step's tokens to each
request's sink. Deadlines are absolute, so late steps shrink the next sleep and the sim never drifts; the
lateness is exported as ``lanterna_sim_step_lag_seconds``. Engine time = loop seconds / time_scale, and the
latency histograms are in engine seconds (the modelled hardware's view). Handlers decode, tokenize and
detokenize; a client that leaves (write fails or the handler is cancelled) aborts its engine request.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from lanterna.errors import (
    InternalError,
    InvalidRequest,
    LanternaError,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    RouteNotFound,
    ServiceUnavailable,
)
from lanterna.protocol import openai as oai
from lanterna.sim.engine import Engine
from lanterna.sim.failures import FailureInjector
from lanterna.sim.lora import LoraRegistry
from lanterna.sim.metrics import RequestTiming, SimMetrics, observe_many
from lanterna.sim.pd import SimPD
from lanterna.sim.publisher import KVEventPublisher
from lanterna.sim.types import EngineRequest, RequestTokens

log = logging.getLogger(__name__)
_LONG_TEXT = 4096  # characters; longer prompts are tokenized in a worker thread


@dataclass(slots=True)
class SimSettings:
    served_model_names: list[str]
    model_root: str
    host: str
    port: int
    max_model_len: int
    vocab_size: int
    time_scale: float = 1.0
    role: str = "both"
    engine_id: str = "sim-0"
    max_body_bytes: int = 16 * 1024 * 1024


@dataclass(slots=True)
class TokenSink:
    """Tokens for one request; the handler drains everything delivered since it last looked."""

    items: list[RequestTokens] = field(default_factory=list)
    waiter: asyncio.Future[None] | None = None
    timing: RequestTiming | None = None
    lora: str | None = None
    finished: bool = False

    def push(self, out: RequestTokens) -> None:
        self.items.append(out)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def drain(self) -> list[RequestTokens]:
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        items, self.items = self.items, []
        return items


class SimServer:
    """Wires engine, tokenizer, metrics, publisher, LoRA registry and failures to an aiohttp app."""

    def __init__(self, settings: SimSettings, engine: Engine, tokenizer: Any, metrics: SimMetrics,
                 publisher: KVEventPublisher | None = None, lora: LoraRegistry | None = None,
                 failures: FailureInjector | None = None, wall_clock: Callable[[], float] = time.time,
                 pd: SimPD | None = None) -> None:
        self.s = settings
        self.engine = engine
        self.tok = tokenizer
        self.metrics = metrics
        self.publisher = publisher
        self.lora = lora or LoraRegistry(enabled=False)
        self.failures = failures or FailureInjector()
        self.pd = pd  # P/D roles (sim/pd.py); None: no KV held for decoders, no pulls (transfer is free)
        self._wall = wall_clock
        self._sinks: dict[str, TokenSink] = {}
        self._wake = asyncio.Event()
        self._t0 = 0.0
        self._next_block_id = 0
        self._flush = False  # run one step while idle: reset_prefix_cache's AllBlocksCleared goes out then
        self.created = int(wall_clock())
        self.engine_vocab = settings.vocab_size

    # ---- clocks ---------------------------------------------------------------------------------
    def engine_now(self) -> float:
        scale = self.s.time_scale
        elapsed = asyncio.get_running_loop().time() - self._t0
        return elapsed / scale if scale > 0 else elapsed

    # ---- engine driver --------------------------------------------------------------------------
    async def drive(self) -> None:
        """Step while there is work; absolute deadlines keep engine time in step with the loop clock."""
        loop = asyncio.get_running_loop()
        scale = self.s.time_scale
        deadline = loop.time()
        while True:
            if not self.engine.has_work() and not self._flush:
                self._wake.clear()
                await self._wake.wait()
                deadline = loop.time()
            self._flush = False
            start = loop.time()
            lag = max(0.0, start - deadline)
            self.metrics.set_lag(lag)
            if lag > 1.0:  # hopelessly behind (e.g. the host stalled): resynchronise, don't burst
                deadline = start
            e_start = (deadline - self._t0) / scale if scale > 0 else start - self._t0
            try:
                out = self.engine.step(e_start)
            except Exception:
                log.exception("engine_step_failed")
                self._fail_all()
                continue
            deadline += out.duration_s * scale if scale > 0 else 0.0
            delay = deadline - loop.time()
            await asyncio.sleep(delay if delay > 0 else 0)
            self._deliver(out.outputs, e_start)
            if self.publisher is not None and out.kv_events:
                self.publisher.publish(out.kv_events, self._wall())
            self.metrics.update_engine(self.engine.stats(), out.num_prefill_tokens + out.num_decode_tokens)

    def _deliver(self, outputs: list[RequestTokens], e_start: float) -> None:
        now = self.engine_now()
        gaps: dict[float, int] = {}  # previous token time -> requests; one histogram update per distinct gap
        sinks = self._sinks
        for o in outputs:
            sink = sinks.get(o.request_id)
            if sink is None:
                continue
            t = sink.timing
            if t is not None and o.token_ids:
                if t.first_token is None:
                    t.first_token, t.scheduled = now, e_start
                elif (last := t.last_token) is not None:
                    gaps[last] = gaps.get(last, 0) + 1
                t.last_token = now
                t.num_generated += len(o.token_ids)
            if o.finish_reason is not None:
                self._finish(o.request_id, sink, o.finish_reason)
            sink.push(o)
        itl = self.metrics.h_itl
        for last, n in gaps.items():
            observe_many(itl, now - last, n)

    def _finish(self, rid: str, sink: TokenSink, reason: str) -> None:
        if sink.finished:
            return
        sink.finished = True
        self._sinks.pop(rid, None)
        if sink.timing is not None:
            self.metrics.finish(sink.timing, reason, self.engine_now())
        if sink.lora is not None:
            self.lora.finished(sink.lora)

    def _fail_all(self) -> None:
        for rid, sink in list(self._sinks.items()):
            self.engine.abort_request(rid)
            self._finish(rid, sink, "error")
            sink.push(RequestTokens(rid, [], finish_reason="error"))

    def submit(self, req: EngineRequest, lora: str | None) -> TokenSink:
        sink = TokenSink(timing=RequestTiming(req.arrival_time, req.max_tokens, len(req.prompt_token_ids)),
                         lora=lora)
        self._sinks[req.request_id] = sink
        if lora is not None:
            self.lora.started(lora)
        self.engine.add_request(req)
        self._wake.set()
        return sink

    def reset_prefix_cache(self) -> bool:
        ok = self.engine.reset_prefix_cache()
        if ok:
            self._flush = True
            self._wake.set()
        return ok

    def abort(self, rid: str) -> None:
        sink = self._sinks.get(rid)
        if sink is None:
            return
        self.engine.abort_request(rid)
        self._finish(rid, sink, "abort")

    # ---- app lifecycle --------------------------------------------------------------------------
    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        # Start-up objects (tokenizer, aiohttp, block pool) live forever: keep them out of every later
        # full collection, whose pause would otherwise show up as step lag under load.
        gc.collect()
        gc.freeze()
        self._t0 = asyncio.get_running_loop().time()
        task = asyncio.create_task(self.drive(), name="sim-driver")
        if self.publisher is not None:
            self.publisher.start()
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if self.publisher is not None:
                await self.publisher.close()
            if self.pd is not None:
                await self.pd.close()

    def build_app(self) -> web.Application:
        from lanterna.sim import routes

        app = web.Application(middlewares=[self._errors], client_max_size=self.s.max_body_bytes)
        routes.add_routes(app, self)
        app.cleanup_ctx.append(self.lifecycle)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except LanternaError as exc:
            return _error_response(exc)
        except web.HTTPMethodNotAllowed as exc:
            return _error_response(MethodNotAllowed("Method Not Allowed",
                                                    headers={"Allow": ", ".join(sorted(exc.allowed_methods))}))
        except web.HTTPNotFound:
            return _error_response(RouteNotFound("Not Found"))
        except web.HTTPRequestEntityTooLarge:
            return _error_response(PayloadTooLarge(
                f"Request body exceeds the limit of {self.s.max_body_bytes} bytes.", param="body"))
        except web.HTTPException:
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("sim_handler_failed", extra={"path": request.path})
            return _error_response(InternalError("Internal server error"))

    # ---- request helpers used by routes ---------------------------------------------------------
    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if len(text) > _LONG_TEXT:
            return await asyncio.to_thread(self.tok.encode, text, add_special_tokens)
        return self.tok.encode(text, add_special_tokens)  # type: ignore[no-any-return]

    async def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        try:
            text = self.tok.apply_chat_template(messages, add_generation_prompt=True)
        except Exception as exc:  # template errors are the client's (bad roles, content)
            raise InvalidRequest(f"chat template failed: {exc}", param="messages") from None
        return await self.encode(text, add_special_tokens=False)

    def inject_failure(self) -> str | None:
        kind = self.failures.draw()
        if kind == "http_500":
            raise InternalError("Injected failure (http_500)")
        if kind == "http_429":
            raise RateLimited("Injected failure (http_429)", headers={"Retry-After": "1"})
        if kind in ("http_503", "dead"):
            raise ServiceUnavailable("Injected failure (service unavailable)")
        return kind

    def new_block_ids(self, num_tokens: int) -> list[int]:
        n = max(1, math.ceil(num_tokens / max(1, self.engine.stats().block_size)))
        first = self._next_block_id
        self._next_block_id += n
        return list(range(first, first + n))


def _error_response(exc: LanternaError) -> web.Response:
    return web.Response(body=oai.encode_json(exc.body()), status=exc.status, content_type="application/json",
                        headers=exc.headers or None)
