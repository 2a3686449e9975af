"""HTTP routes of ``lanterna sim``: vLLM 0.32's OpenAI endpoints and its admin/observability extras.

Handlers validate with ``protocol.openai`` (vLLM's exact error texts), hand an ``EngineRequest`` to the
``SimServer`` and turn the tokens it delivers into vLLM-shaped JSON or SSE. ``finally: srv.abort(rid)``
is what makes a vanished client free its engine seat: it runs when a write fails and when aiohttp
cancels the handler.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from lanterna.errors import InternalError, InvalidRequest
from lanterna.protocol import openai as oai
from lanterna.sim.pd import PULL_PATH
from lanterna.sim.sse import ChunkTemplate
from lanterna.sim.types import EngineRequest, RemotePrefill

if TYPE_CHECKING:
    from lanterna.sim.server import SimServer, TokenSink

_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def add_routes(app: web.Application, srv: SimServer) -> None:
    h = _Handlers(srv)
    app.router.add_post("/v1/completions", h.completions)
    app.router.add_post("/v1/chat/completions", h.chat)
    app.router.add_get("/v1/models", h.models)
    app.router.add_get("/health", h.health)
    app.router.add_get("/metrics", h.metrics)
    app.router.add_post("/tokenize", h.tokenize)
    app.router.add_post("/detokenize", h.detokenize)
    app.router.add_post("/v1/load_lora_adapter", h.load_lora)
    app.router.add_post("/v1/unload_lora_adapter", h.unload_lora)
    app.router.add_post("/reset_prefix_cache", h.reset_prefix_cache)
    app.router.add_post(PULL_PATH, h.kv_pull)


class _Handlers:
    def __init__(self, srv: SimServer) -> None:
        self.srv = srv
        self.mml = srv.s.max_model_len

    def _model(self, requested: str | None) -> tuple[str, str | None]:
        adapters = self.srv.lora.names() if self.srv.lora.enabled else []
        return oai.resolve_model(requested, self.srv.s.served_model_names, adapters)

    def _check_ids(self, ids: list[int]) -> None:
        vocab = self.srv.engine_vocab
        for t in ids:
            if t >= vocab:
                raise InvalidRequest(f"Token id {t} is out of vocabulary", param="prompt")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        req = oai.decode_request(await request.read(), oai.CompletionRequest)
        model, lora = self._model(req.model)
        oai.check_supported(req)
        oai.check_max_tokens(req.max_tokens, self.mml)
        prompt = oai.completion_prompt(req)
        ids = await self.srv.encode(prompt) if isinstance(prompt, str) else prompt
        self._check_ids(ids)
        oai.check_prompt_len(len(ids), self.mml, from_text=isinstance(prompt, str))
        max_tokens = min(req.max_tokens or 16, self.mml - len(ids))
        return await self._serve(request, req, ids, max_tokens, model, lora, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        req = oai.decode_request(await request.read(), oai.ChatCompletionRequest)
        model, lora = self._model(req.model)
        oai.check_supported(req)
        asked = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        oai.check_max_tokens(asked, self.mml)
        ids = await self.srv.encode_chat(oai.chat_messages(req))
        oai.check_prompt_len(len(ids), self.mml, from_text=True)
        max_tokens = min(asked or self.mml, self.mml - len(ids))
        return await self._serve(request, req, ids, max_tokens, model, lora, chat=True)

    async def _serve(self, request: web.Request, req: Any, ids: list[int], max_tokens: int, model: str,
                     lora: str | None, *, chat: bool) -> web.StreamResponse:
        srv = self.srv
        failure = srv.inject_failure()
        if failure == "connection_drop":
            _drop(request)
            return web.Response()
        if failure == "stall":
            await asyncio.sleep(srv.failures.stall_s)
        kv = req.kv_transfer_params
        remote = None
        arrival = srv.engine_now()
        if kv is not None and kv.do_remote_prefill:
            remote = RemotePrefill(kv.remote_engine_id, kv.remote_block_ids, kv.remote_host, kv.remote_port)
            if srv.pd is not None:
                remote = await self._transfer(remote, len(ids))
        rid = oai.new_id("chatcmpl-" if chat else "cmpl-")
        ereq = EngineRequest(request_id=rid, prompt_token_ids=ids, max_tokens=max_tokens,
                             arrival_time=arrival, lora_name=lora, cache_salt=req.cache_salt,
                             seed=req.seed, remote_prefill=remote,
                             do_remote_decode=bool(kv is not None and kv.do_remote_decode), priority=req.priority)
        sink = srv.submit(ereq, lora)
        try:
            if req.stream:
                return await self._stream(request, sink, rid, model, len(ids), chat, req.include_usage,
                                          req.continuous_usage, drop_mid=failure == "connection_drop_mid")
            return await self._whole(sink, rid, model, ids, chat, ereq.do_remote_decode)
        finally:
            srv.abort(rid)  # no-op when finished; frees the seat when the client left

    async def _transfer(self, remote: RemotePrefill, num_tokens: int) -> RemotePrefill | None:
        """Decode side of P/D: pull the prefill's KV, then wait the link's transfer time before the engine
        admits the request; None (prefill locally) when the pull failed."""
        pd = self.srv.pd
        assert pd is not None
        if await pd.pull(remote) != "ok":
            return None
        wait_s = pd.link.transfer_s(num_tokens * self.srv.engine.config.kv_bytes_per_token) * self.srv.s.time_scale
        if wait_s > 0:
            await asyncio.sleep(wait_s)  # NOTE: the transfer's duration, modelled; not waiting for an event
        return remote

    async def kv_pull(self, request: web.Request) -> web.Response:
        """Sim-only stand-in for the NIXL read: 200 once per held lease, 404 when not (or no longer) held."""
        data = oai.decode_request(await request.read(), oai.KVTransferParams)
        pd = self.srv.pd
        ok = pd is not None and pd.take(data.remote_block_ids, self.srv.engine_now())
        return web.Response(status=200 if ok else 404)

    async def _whole(self, sink: TokenSink, rid: str, model: str, ids: list[int], chat: bool,
                     remote_decode: bool) -> web.Response:
        out_ids: list[int] = []
        cached, reason = 0, None
        while reason is None:
            for o in await sink.drain():
                out_ids.extend(o.token_ids)
                cached = max(cached, o.num_cached_tokens)
                reason = o.finish_reason or reason
        if reason == "error":
            raise InternalError("The engine failed while serving this request.")
        text = self.srv.tok.decode(out_ids)
        use = oai.usage(len(ids), len(out_ids), cached, chat=chat, stream=False)
        kv = None
        pd = self.srv.pd
        if remote_decode and (pd is None or pd.holds_kv):
            s = self.srv.s
            blocks = self.srv.new_block_ids(len(ids))
            if pd is not None:
                pd.hold(blocks, self.srv.engine_now())
            kv = {"do_remote_prefill": True, "do_remote_decode": False,
                  "remote_block_ids": blocks, "remote_engine_id": s.engine_id,
                  "remote_host": s.host, "remote_port": s.port, "tp_size": 1}
        build = oai.chat_body if chat else oai.completion_body
        body = build(rid, int(time.time()), model, text, reason, use, kv)
        return web.Response(body=body, content_type="application/json")

    async def _stream(self, request: web.Request, sink: TokenSink, rid: str, model: str, num_prompt: int,
                      chat: bool, include_usage: bool, continuous: bool, drop_mid: bool) -> web.StreamResponse:
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        await resp.prepare(request)
        created = int(time.time())
        chunk = oai.chat_chunk if chat else oai.completion_chunk
        plain = None if continuous else ChunkTemplate(chunk, rid, created, model)  # the per-token fast path
        if chat:
            await resp.write(oai.chat_role_chunk(rid, created, model,
                                                 oai.running_usage(num_prompt, 0) if continuous else None))
        detok = self.srv.tok.detokenizer()
        num_out, cached, reason = 0, 0, None
        while reason is None:
            items = await sink.drain()
            new: list[int] = []
            for o in items:
                new.extend(o.token_ids)
                cached = max(cached, o.num_cached_tokens)
                reason = o.finish_reason or reason
            num_out += len(new)
            if reason == "error":
                err = InternalError("The engine failed while serving this request.")
                await resp.write(oai.error_frame(err.body()))
                break
            text = detok.push(new) if new else ""
            if reason is not None:
                text += detok.flush()
            if plain is not None and reason is None:
                if text:
                    await resp.write(plain.render(text))
            elif text or reason is not None:
                running = oai.running_usage(num_prompt, num_out) if continuous else None
                await resp.write(chunk(rid, created, model, text, reason, running,
                                       reason is not None and not include_usage))
            if drop_mid:
                _drop(request)
                return resp
        if include_usage and reason != "error":
            use = oai.usage(num_prompt, num_out, cached, chat=chat, stream=True)
            await resp.write(oai.usage_chunk(rid, created, model, use, chat=chat))
        await resp.write(oai.DONE_FRAME)
        await resp.write_eof()
        return resp

    async def models(self, request: web.Request) -> web.Response:
        s, created = self.srv.s, self.srv.created
        data = [oai.model_card(n, created, s.model_root, None, s.max_model_len) for n in s.served_model_names]
        data += [oai.model_card(a.name, created, a.path, s.served_model_names[0], None)
                 for a in self.srv.lora.adapters()]
        return web.Response(body=oai.encode_json({"object": "list", "data": data}), content_type="application/json")

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.srv.failures.dead else 200)

    async def metrics(self, request: web.Request) -> web.Response:
        running, waiting = (self.srv.engine.lora_requests_info() if self.srv.engine.lora is not None
                            else self.srv.lora.running_and_waiting())
        self.srv.metrics.set_lora(running, waiting, time.time())
        return web.Response(body=self.srv.metrics.expose(), headers={"Content-Type": _METRICS_TYPE})

    async def tokenize(self, request: web.Request) -> web.Response:
        req = oai.decode_request(await request.read(), oai.TokenizeRequest)
        self._model(req.model)
        if req.messages is not None:
            ids = await self.srv.encode_chat(oai.chat_messages(req))
        else:
            ids = await self.srv.encode(req.prompt or "", req.add_special_tokens)
        strs = [self.srv.tok.id_to_token(t) for t in ids] if req.return_token_strs else None
        return web.Response(body=oai.encode_json({"count": len(ids), "max_model_len": self.mml, "tokens": ids,
                                                  "token_strs": strs}), content_type="application/json")

    async def detokenize(self, request: web.Request) -> web.Response:
        req = oai.decode_request(await request.read(), oai.DetokenizeRequest)
        self._model(req.model)
        self._check_ids(req.tokens)
        return web.Response(body=oai.encode_json({"prompt": self.srv.tok.decode(req.tokens)}),
                            content_type="application/json")

    async def load_lora(self, request: web.Request) -> web.Response:
        req = oai.decode_request(await request.read(), oai.LoadLoraRequest)
        self._require_lora()
        return web.Response(text=self.srv.lora.load(req.lora_name, req.lora_path))

    async def unload_lora(self, request: web.Request) -> web.Response:
        req = oai.decode_request(await request.read(), oai.UnloadLoraRequest)
        self._require_lora()
        return web.Response(text=self.srv.lora.unload(req.lora_name))

    def _require_lora(self) -> None:
        if not self.srv.lora.enabled:
            raise InvalidRequest("LoRA is not enabled on this server; start it with --enable-lora.",
                                 param="lora_name")

    async def reset_prefix_cache(self, request: web.Request) -> web.Response:
        self.srv.reset_prefix_cache()
        return web.Response(status=200)


def _drop(request: web.Request) -> None:
    """Injected connection drop: abort the TCP connection without a response (RST, not FIN)."""
    if request.transport is not None:
        request.transport.abort()
