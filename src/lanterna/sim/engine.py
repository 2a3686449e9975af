"""Virtual-time vLLM V1 engine: the step loop, with no clock and no I/O.

Calling protocol (see ``sim/types.py``): the driver calls ``add_request`` / ``abort_request`` at any
time and ``step(now)`` while ``has_work()``; each step schedules one iteration exactly like vLLM V1
(running requests first, then waiting ones by the scheduling policy within the token budget and seat
limit, chunked prefill, preemption by recompute), asks the ``StepTimer`` how long it takes, and returns
the tokens and the KV events that the driver delivers at ``now + duration_s``. Nothing here reads a
clock or the global random: token streams are seeded by (engine seed, request seed or id).

Parts: ``scheduler.py`` (waiting order and preemption victim), ``kv_cache_manager.py`` (blocks, prefix
cache, tiers, KV events), ``request_state.py`` (per-request state and pre-drawn tokens), ``lora_slots.py``
(``max_loras`` per batch: a waiting request whose adapter would be one too many is skipped, as vLLM V1 does;
loading a non-resident adapter adds its load time to the step). The step is
the hot path of the virtual cluster (once per running request per step), so it is written flat.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lanterna.sim.engine_config import EngineConfig, EngineStats
from lanterna.sim.kv_cache_manager import KVCacheManager
from lanterna.sim.lora_slots import LoraSlots
from lanterna.sim.request_state import SeqState, TokenStream, make_seq
from lanterna.sim.scheduler import make_waiting_queue, preemption_victim
from lanterna.sim.tiers import KVTier
from lanterna.sim.timing import BatchShape, StepTimer
from lanterna.sim.types import EngineRequest, RequestTokens, StepOutput

__all__ = ["Engine", "EngineConfig", "EngineStats", "EngineStepOutput"]

TOKEN_BATCH = 4096  # unseeded token ids drawn per numpy call (one call every many steps)


@dataclass(slots=True)
class EngineStepOutput(StepOutput):
    """``StepOutput`` plus, with ``compact_outputs``, the ids of requests that got one plain decode token."""

    decoded: list[str] = field(default_factory=list)


class Engine:
    """One vLLM replica's engine core in virtual time (see module docstring for the protocol)."""

    def __init__(self, config: EngineConfig, timer: StepTimer, *, seed: int = 0,
                 storage: KVTier | None = None) -> None:
        """``storage``: a shared-storage tier other engines also use (see ``sim/tiers.py``)."""
        self.config = config
        self.timer = timer
        self.seed = seed
        self.kv = KVCacheManager(config, storage)
        self.pool = self.kv.pool
        self.running: list[SeqState] = []
        self.waiting = make_waiting_queue(config.scheduling_policy)
        self._policy = config.scheduling_policy
        self._seqs: dict[str, SeqState] = {}
        self._lora_ids: dict[str, int] = {}
        self.lora = LoraSlots(config.max_loras, config.lora_load_s) if config.max_loras > 0 else None
        self._pending: list[RequestTokens] = []  # outputs decided outside a step (rejections)
        self._order = 0
        self._tokens = TokenStream(f"{seed}:engine", config.vocab_size)  # for unseeded requests
        self._drawn: list[int] = []
        self._drawn_pos = 0
        self._transfer_s = 0.0  # P/D KV pulls of requests admitted in the current step
        self.num_preemptions = 0
        self.num_prompt_tokens = 0
        self.num_generation_tokens = 0

    # ---- requests ------------------------------------------------------------------------------
    def add_request(self, req: EngineRequest) -> None:
        """Queue a request. One that can never run is finished with ``abort`` on the next step."""
        if req.request_id in self._seqs:
            raise ValueError(f"duplicate request id {req.request_id!r}")
        cfg = self.config
        n = len(req.prompt_token_ids)
        if n == 0 or n >= cfg.max_model_len or -(-(n + 1) // cfg.block_size) > cfg.num_gpu_blocks:
            self._pending.append(RequestTokens(req.request_id, [], "abort"))
            return
        lora_id = self._lora_ids.setdefault(req.lora_name, len(self._lora_ids) + 1) if req.lora_name else None
        self._order += 1
        own = TokenStream(f"{self.seed}:{req.seed}", cfg.vocab_size) if req.seed is not None else None
        s = make_seq(req, own, own or self._tokens, cfg.max_model_len, cfg.eos_probability, lora_id, self._order)
        self._seqs[req.request_id] = s
        self.waiting.add(s)

    def abort_request(self, request_id: str) -> bool:
        """Drop a request and free its blocks (into the cache); no further outputs for it."""
        s = self._seqs.pop(request_id, None)
        if s is None:
            return False
        if s in self.waiting:
            self.waiting.remove(s)
        else:
            self.running.remove(s)
            self._stop_lora(s)
        self.kv.free(s)
        s.finished = True
        return True

    def has_work(self) -> bool:
        return bool(self.running or self.waiting or self._pending or self.pool.events)

    # ---- the step --------------------------------------------------------------------------------
    def step(self, now: float) -> EngineStepOutput:
        """One engine iteration: schedule, sample, cache blocks, 'run' (ask the timer), emit events."""
        cfg = self.config
        out = EngineStepOutput(0.0, outputs=self._pending)
        self._pending = []
        budget = cfg.max_num_batched_tokens
        bs = cfg.block_size
        sched: list[SeqState] = []
        nums: list[int] = []
        running = self.running
        i = 0
        while i < len(running) and budget > 0:
            s = running[i]
            c = s.num_computed
            n = len(s.tokens) - c
            if n > budget:
                n = budget
            if c + n > s.num_slots and not self.kv.grow(s, c + n):
                ok, i, budget = self._make_room(s, i, c + n, budget, sched, nums, out)
                if not ok:
                    continue  # s itself was preempted or aborted; running[i] is the next one
            sched.append(s)
            nums.append(n)
            budget -= n
            i += 1

        loaded = [0, 0]
        self._transfer_s = 0.0
        lora_s = 0.0
        if not out.num_preemptions:  # vLLM admits nobody in a step that had to preempt
            waiting, max_seqs, lora = self.waiting, cfg.max_num_seqs, self.lora
            skipped: list[SeqState] = []
            while waiting and budget > 0 and len(running) < max_seqs:
                s = waiting.peek()
                name = s.req.lora_name
                if lora is not None and name is not None and not lora.can_run(name):
                    skipped.append(waiting.pop())  # one adapter too many for this batch: vLLM skips it
                    continue
                admitted = self._admit(s, budget, loaded)
                if admitted < 0:
                    break
                waiting.pop()
                if lora is not None and name is not None:
                    lora_s += lora.start(name)
                running.append(s)
                sched.append(s)
                nums.append(admitted)
                budget -= admitted
            for s in reversed(skipped):  # back at the head, in their order (vLLM prepends them)
                waiting.add_preempted(s)
        shape = self._run_batch(sched, nums, out)
        extra_s = self._transfer_s + lora_s
        if loaded[0] or loaded[1]:
            bs_bytes = bs * cfg.kv_bytes_per_token
            shape.num_loaded_bytes = (loaded[0] + loaded[1]) * bs_bytes
            extra_s += loaded[0] * bs_bytes / cfg.cpu_bandwidth_bps + loaded[1] * bs_bytes / cfg.storage_bandwidth_bps
        out.duration_s = (self.timer.step_time(shape) if sched else 0.0) + extra_s
        out.kv_events = self.pool.events
        self.pool.events = []
        return out

    def _run_batch(self, sched: list[SeqState], nums: list[int], out: EngineStepOutput) -> BatchShape:
        """Advance every scheduled request: computed tokens, full blocks cached, one token sampled per
        request whose prompt is done. Returns the batch shape for the timer."""
        shape = BatchShape()
        decode_ctx, prefill = shape.decode_contexts, shape.prefill_chunks
        dec_append, outputs = decode_ctx.append, out.outputs
        bs = self.config.block_size
        caching = self.config.enable_prefix_caching
        cache_full = self.kv.cache_full_blocks
        num_sampled = num_prompt = 0
        drawn, j = self._drawn, self._drawn_pos
        if j + len(sched) > len(drawn):  # at most one token per scheduled request
            drawn, j = self._tokens.take(max(TOKEN_BATCH, len(sched))), 0
        num_before = len(outputs)  # rejections and aborts: no tokens
        decoded = out.decoded if self.config.compact_outputs else None
        finished: list[SeqState] = []
        for s, n in zip(sched, nums, strict=True):
            c = s.num_computed
            tokens = s.tokens
            t = len(tokens)
            if n == 1 and c + 1 == t:
                dec_append(t)
            else:
                prefill.append((n, c))
                num_sampled += c + n == t
            c += n
            s.num_computed = c
            if caching and c // bs > s.num_cached_blocks:
                cache_full(s)
            if c != t:
                continue
            k = s.num_output = s.num_output + 1
            if k < s.stop_at:
                if s.stream is None:
                    tok = drawn[j]
                    j += 1
                else:
                    tok = s.stream.draw()
                tokens.append(tok)
                if k == 1:
                    num_prompt += len(s.req.prompt_token_ids)
                elif decoded is not None:
                    decoded.append(s.rid)
                    continue
                outputs.append(RequestTokens(s.rid, [tok], None, s.num_cached_tokens, k == 1, s.num_preemptions))
                continue
            reason = s.stop_reason
            if reason == "stop":
                last = s.req.eos_token_id
            elif s.stream is None:
                last = drawn[j]
                j += 1
            else:
                last = s.stream.draw()
            assert last is not None  # NOTE: "stop" is only chosen when eos_token_id is set
            tokens.append(last)
            if k == 1:
                num_prompt += len(s.req.prompt_token_ids)
            outputs.append(RequestTokens(s.rid, [last], reason, s.num_cached_tokens, k == 1, s.num_preemptions))
            finished.append(s)
        self._drawn, self._drawn_pos = drawn, j
        self.num_generation_tokens += len(outputs) - num_before + len(out.decoded)  # one token each
        self.num_prompt_tokens += num_prompt
        shape.num_prefill_sampled = num_sampled
        out.num_decode_tokens = len(decode_ctx)
        out.num_prefill_tokens = sum(n for n, _ in prefill) if prefill else 0
        if finished:
            for s in finished:
                self.kv.free(s)
                self._finish(s)
                self._stop_lora(s)
            self.running = [s for s in self.running if not s.finished]
        return shape

    def _make_room(self, s: SeqState, i: int, target: int, budget: int, sched: list[SeqState],
                   nums: list[int], out: EngineStepOutput) -> tuple[bool, int, int]:
        """Preempt by policy until ``s`` (``running[i]``) fits ``target`` tokens.

        Returns (s fits, index of the request to look at next, budget). A victim already scheduled this
        step (priority policy) gives its tokens back; ``s`` as the victim is preempted, or aborted when
        it is alone and the pool can never hold it."""
        running = self.running
        while True:
            j = preemption_victim(self._policy, running)
            victim = running[j]
            if victim is s:
                break
            running.pop(j)
            if j < i:  # already scheduled this step: undo that
                k = sched.index(victim)
                sched.pop(k)
                budget += nums.pop(k)
                i -= 1
            self._preempt(victim, out)
            if self.kv.grow(s, target):
                return True, i, budget
        running.pop(i)
        if not running:  # alone in the pool and still short: it can never fit
            self.kv.free(s)
            self._finish(s)
            self._stop_lora(s)
            out.outputs.append(RequestTokens(s.req.request_id, [], "abort", s.num_cached_tokens))
        else:
            self._preempt(s, out)
        return False, i, budget

    def _preempt(self, s: SeqState, out: StepOutput) -> None:
        """Recompute-style preemption: free everything, back to waiting (FCFS: at the front)."""
        self.kv.free(s)
        self._stop_lora(s)
        s.num_computed = 0
        s.num_cached_blocks = 0
        s.num_preemptions += 1
        self.waiting.add_preempted(s)
        self.num_preemptions += 1
        out.num_preemptions += 1

    def _finish(self, s: SeqState) -> None:
        s.finished = True
        self._seqs.pop(s.req.request_id, None)

    def _stop_lora(self, s: SeqState) -> None:
        """``s`` left the running set: its adapter's slot may be reused (it stays resident until evicted)."""
        if self.lora is not None and s.req.lora_name is not None:
            self.lora.stop(s.req.lora_name)

    def _admit(self, s: SeqState, budget: int, loaded: list[int]) -> int:
        """Blocks and chunk size for the head of the waiting queue; tokens scheduled, or -1 if no room."""
        num_tokens = len(s.tokens)
        first = not s.started
        hits = self.kv.lookup(s)
        num_hit = len(hits) * self.config.block_size
        remote = first and s.req.remote_prefill is not None
        computed = num_tokens - 1 if remote else num_hit
        n = 1 if remote else min(num_tokens - computed, budget)
        if not self.kv.allocate_with_hits(s, hits, computed + n, loaded):
            return -1
        s.num_computed = computed
        if remote:
            self._transfer_s += (computed - num_hit) * self.config.kv_bytes_per_token / self.config.kv_transfer_bandwidth_bps
        if first:
            s.started = True
            s.num_cached_tokens = computed  # as vLLM: local prefix hits plus tokens whose KV was pulled
            self.kv.prefix_cache_queries += num_tokens
            self.kv.prefix_cache_hits += sum(1 for b, _ in hits if b >= 0) * self.config.block_size
        return n

    # ---- introspection -------------------------------------------------------------------------
    def stats(self) -> EngineStats:
        cfg, kv = self.config, self.kv
        st = EngineStats(len(self.running), len(self.waiting), self.pool.usage, cfg.num_gpu_blocks, cfg.block_size,
                         kv.prefix_cache_queries, kv.prefix_cache_hits, self.num_preemptions, cfg.num_cpu_blocks,
                         self.num_prompt_tokens, self.num_generation_tokens, kv.num_tier_hit_tokens,
                         kv.num_storage_hit_tokens)
        lora = self.lora
        if lora is not None:
            st.max_loras = lora.max_loras
            st.running_lora_adapters, st.waiting_lora_adapters = self.lora_requests_info()
            st.num_lora_loads, st.num_lora_evictions = lora.num_loads, lora.num_evictions
        return st

    def lora_requests_info(self) -> tuple[list[str], list[str]]:
        """(adapters of running requests, adapters of waiting requests): ``vllm:lora_requests_info``'s
        labels. One adapter may be in both (some of its requests run, others wait), as in vLLM."""
        running = self.lora.running() if self.lora is not None else []
        waiting = list(dict.fromkeys(s.req.lora_name for s in self.waiting if s.req.lora_name))
        return running, waiting

    def reset_prefix_cache(self) -> bool:
        """Forget all cached blocks (all tiers); False while requests hold blocks, as vLLM.

        ``AllBlocksCleared`` goes out with the next step's events (vLLM publishes it then too), so a
        driver should call ``step`` once even when idle."""
        return self.kv.reset()
