"""Virtual-time vLLM V1 engine: scheduler + block pool + sampler, with no clock and no I/O.

Calling protocol (see ``sim/types.py``): the driver calls ``add_request`` / ``abort_request`` at any
time and ``step(now)`` while ``has_work()``; each step schedules one iteration exactly like vLLM V1
(running requests first, then waiting FCFS within the token budget and seat limit, chunked prefill,
preemption by recompute), asks the ``StepTimer`` how long it takes, and returns the tokens and the
KV events that the driver delivers at ``now + duration_s``. Nothing here reads a clock or the global
random: token ids come from per-request ``random.Random`` seeded by (engine seed, request seed or id).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from lanterna.protocol.kv_events import (
    MEDIUM_CPU,
    MEDIUM_GPU,
    MEDIUM_SHARED_STORAGE,
    AllBlocksCleared,
    BlockHash,
    BlockRemoved,
    BlockStored,
)
from lanterna.sim.block_hash import block_extra_keys, hash_blocks, seed_for
from lanterna.sim.block_pool import BlockPool, OffloadTier
from lanterna.sim.timing import BatchShape, StepTimer
from lanterna.sim.types import EngineRequest, FinishReason, RequestTokens, StepOutput


@dataclass(frozen=True, slots=True)
class EngineConfig:
    block_size: int = 16
    num_gpu_blocks: int = 4096
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int = 8192
    enable_prefix_caching: bool = True
    vocab_size: int = 8192
    hash_seed: int = 0  # like PYTHONHASHSEED: changes block hashes, not behaviour
    num_cpu_blocks: int = 0  # optional secondary tiers (0 = off)
    num_storage_blocks: int = 0
    kv_bytes_per_token: int = 131072  # for transfer times (tiers, P/D)
    cpu_bandwidth_bps: float = 25e9
    storage_bandwidth_bps: float = 2e9
    kv_transfer_bandwidth_bps: float = 25e9  # P/D remote prefill pull
    eos_probability: float = 0.02  # per token after min_tokens, when ignore_eos is False


@dataclass(slots=True)
class EngineStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float  # 0..1 of GPU blocks in use by requests
    num_gpu_blocks: int
    block_size: int
    prefix_cache_queries: int  # cumulative prompt tokens looked up
    prefix_cache_hits: int  # cumulative tokens found in the GPU prefix cache
    num_preemptions: int
    num_cpu_blocks: int
    num_prompt_tokens: int
    num_generation_tokens: int
    num_tier_hit_tokens: int = 0  # tokens loaded back from CPU / storage tiers


@dataclass(slots=True, eq=False)
class _Seq:
    """Engine-side state of one request (vLLM's ``Request``)."""

    req: EngineRequest
    tokens: list[int]  # prompt + sampled outputs
    rng: random.Random
    lora_id: int | None
    stop_at: int  # output count that ends with "length" (max_tokens, max_model_len, P/D prefill)
    eos_id: int | None  # set only when EOS may end the request
    blocks: list[int] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)  # of the full blocks of ``tokens`` hashed so far
    num_computed: int = 0  # tokens whose KV is in ``blocks``
    num_cached_blocks: int = 0  # leading blocks registered in the prefix cache
    num_output: int = 0
    started: bool = False
    num_cached_tokens: int = 0
    num_preemptions: int = 0
    finished: bool = False


class Engine:
    """One vLLM replica's engine core in virtual time (see module docstring for the protocol)."""

    def __init__(self, config: EngineConfig, timer: StepTimer, *, seed: int = 0) -> None:
        self.config = config
        self.timer = timer
        self.seed = seed
        self._hseed = seed_for(config.hash_seed)
        self._tiers = [
            OffloadTier(medium, cap)
            for medium, cap in (
                (MEDIUM_CPU, config.num_cpu_blocks),
                (MEDIUM_SHARED_STORAGE, config.num_storage_blocks),
            )
            if cap > 0
        ]
        self.pool = BlockPool(config.num_gpu_blocks, self._offload if self._tiers else None)
        self.running: list[_Seq] = []
        self.waiting: deque[_Seq] = deque()
        self._seqs: dict[str, _Seq] = {}
        self._lora_ids: dict[str, int] = {}
        self._pending: list[RequestTokens] = []  # outputs decided outside a step (rejections)
        self.num_preemptions = 0
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.num_tier_hit_tokens = 0
        self.num_prompt_tokens = 0
        self.num_generation_tokens = 0
        self._any_finished = False
        self._vocab = config.vocab_size
        self._eos_p = config.eos_probability

    # ---- requests ------------------------------------------------------------------------------
    def add_request(self, req: EngineRequest) -> None:
        """Queue a request (FCFS). One that can never run is finished with ``abort`` on the next step."""
        if req.request_id in self._seqs:
            raise ValueError(f"duplicate request id {req.request_id!r}")
        cfg = self.config
        n = len(req.prompt_token_ids)
        if n == 0 or n >= cfg.max_model_len or -(-(n + 1) // cfg.block_size) > cfg.num_gpu_blocks:
            self._pending.append(RequestTokens(req.request_id, [], "abort"))
            return
        lora_id = None
        if req.lora_name:
            lora_id = self._lora_ids.setdefault(req.lora_name, len(self._lora_ids) + 1)
        key = req.seed if req.seed is not None else req.request_id
        stop_at = 1 if req.do_remote_decode else min(req.max_tokens, cfg.max_model_len - n)
        eos_id = None if req.ignore_eos else req.eos_token_id
        s = _Seq(
            req, list(req.prompt_token_ids), random.Random(f"{self.seed}:{key}"), lora_id, stop_at, eos_id
        )
        self._seqs[req.request_id] = s
        self.waiting.append(s)

    def abort_request(self, request_id: str) -> bool:
        """Drop a request and free its blocks (into the cache); no further outputs for it."""
        s = self._seqs.pop(request_id, None)
        if s is None:
            return False
        if s in self.waiting:
            self.waiting.remove(s)
        else:
            self.running.remove(s)
        self._free(s)
        s.finished = True
        return True

    def has_work(self) -> bool:
        return bool(self.running or self.waiting or self._pending or self.pool.events)

    # ---- the step --------------------------------------------------------------------------------
    def step(self, now: float) -> StepOutput:
        """One engine iteration: schedule, 'run' (ask the timer), sample, cache blocks, emit events."""
        cfg = self.config
        out = StepOutput(0.0, outputs=self._pending)
        self._pending = []
        budget = cfg.max_num_batched_tokens
        bs = cfg.block_size
        shape = BatchShape()
        decode_ctx, prefill = shape.decode_contexts, shape.prefill_chunks
        sched: list[_Seq] = []
        nums: list[int] = []
        running = self.running
        self._any_finished = False
        num_sampled = 0  # prefill chunks that complete their prompt (they sample a token)
        i = 0
        while i < len(running) and budget > 0:
            s = running[i]
            c = s.num_computed
            n = len(s.tokens) - c
            if n > budget:
                n = budget
            if c + n > len(s.blocks) * bs and not self._grow(s, c + n):
                if not self._make_room(s, i, c + n, out):
                    continue  # s itself was preempted (it was last) or aborted
            sched.append(s)
            nums.append(n)
            budget -= n
            i += 1
            if n == 1 and c + 1 == len(s.tokens):
                decode_ctx.append(c + 1)
            else:
                prefill.append((n, c))
                num_sampled += c + n == len(s.tokens)

        extra_s = 0.0
        loaded: list[int] = [0, 0]
        if not out.num_preemptions:  # vLLM admits nobody in a step that had to preempt
            while self.waiting and budget > 0 and len(running) < cfg.max_num_seqs:
                admitted = self._admit(self.waiting[0], budget, loaded)
                if admitted is None:
                    break
                s, n, transfer_s = admitted
                self.waiting.popleft()
                running.append(s)
                sched.append(s)
                nums.append(n)
                budget -= n
                extra_s += transfer_s
                c = s.num_computed
                if n == 1 and c + 1 == len(s.tokens):
                    decode_ctx.append(c + 1)
                else:
                    prefill.append((n, c))
                    num_sampled += c + n == len(s.tokens)

        shape.num_prefill_sampled = num_sampled
        out.num_decode_tokens = len(decode_ctx)
        out.num_prefill_tokens = sum(n for n, _ in prefill)
        if loaded[0] or loaded[1]:
            bs_bytes = bs * cfg.kv_bytes_per_token
            shape.num_loaded_bytes = (loaded[0] + loaded[1]) * bs_bytes
            extra_s += (
                loaded[0] * bs_bytes / cfg.cpu_bandwidth_bps
                + loaded[1] * bs_bytes / cfg.storage_bandwidth_bps
            )
        out.duration_s = (self.timer.step_time(shape) if sched else 0.0) + extra_s

        caching = cfg.enable_prefix_caching
        outputs, sample = out.outputs, self._sample
        for s, n in zip(sched, nums, strict=True):
            c = s.num_computed = s.num_computed + n
            if caching and c // bs > s.num_cached_blocks:
                self._cache_full_blocks(s)
            if c == len(s.tokens):
                outputs.append(sample(s))
        if self._any_finished:
            self.running = [s for s in running if not s.finished]
        out.kv_events = self.pool.events
        self.pool.events = []
        return out

    def _grow(self, s: _Seq, num_tokens: int) -> bool:
        """Give ``s`` enough blocks for ``num_tokens`` KV slots; False if the pool is short."""
        need = -(-num_tokens // self.config.block_size) - len(s.blocks)
        if need <= 0:
            return True
        new = self.pool.allocate(need)
        if new is None:
            return False
        s.blocks.extend(new)
        return True

    def _make_room(self, s: _Seq, i: int, target: int, out: StepOutput) -> bool:
        """Preempt from the end of the running list until ``s`` fits; False if ``s`` itself went."""
        running = self.running
        while running[-1] is not s:
            self._preempt(running.pop(), out)
            if self._grow(s, target):
                return True
        running.pop()
        if i == 0:  # alone in the pool and still short: it can never fit
            self._free(s)
            self._finish(s)
            out.outputs.append(RequestTokens(s.req.request_id, [], "abort", s.num_cached_tokens))
        else:
            self._preempt(s, out)
        return False

    def _preempt(self, s: _Seq, out: StepOutput) -> None:
        """Recompute-style preemption: free everything, go to the FRONT of the waiting queue."""
        self._free(s)
        s.num_computed = 0
        s.num_cached_blocks = 0
        s.num_preemptions += 1
        self.waiting.appendleft(s)
        self.num_preemptions += 1
        out.num_preemptions += 1

    def _free(self, s: _Seq) -> None:
        # NOTE: reversed, so the sequence's tail is evicted before its (more shareable) head.
        self.pool.free(reversed(s.blocks))
        s.blocks = []

    def _finish(self, s: _Seq) -> None:
        s.finished = True
        self._any_finished = True
        self._seqs.pop(s.req.request_id, None)

    # ---- admission and the prefix cache -------------------------------------------------------
    def _admit(self, s: _Seq, budget: int, loaded: list[int]) -> tuple[_Seq, int, float] | None:
        """Schedule the head of the waiting queue: prefix lookup, blocks, chunk size; None if no room."""
        cfg, pool, bs = self.config, self.pool, self.config.block_size
        num_tokens = len(s.tokens)
        first = not s.started
        hits: list[tuple[int, int]] = []  # (block id or -1-tier for a load, hash) in sequence order
        if cfg.enable_prefix_caching:
            self._extend_hashes(s, num_tokens // bs)
            for h in s.hashes[: (num_tokens - 1) // bs]:  # NOTE: the last token is always recomputed
                b = pool.lookup(h)
                if b is None:
                    tier = next((t for t, tr in enumerate(self._tiers) if h in tr), -1)
                    if tier < 0:
                        break
                    b = -1 - tier
                hits.append((b, h))
        num_hit = len(hits) * bs
        remote = first and s.req.remote_prefill is not None
        computed = num_tokens - 1 if remote else num_hit
        n = 1 if remote else min(num_tokens - computed, budget)
        gpu_hits = [b for b, _ in hits if b >= 0]
        num_new = -(-(computed + n) // bs) - len(gpu_hits)
        reviving = sum(1 for b in gpu_hits if pool.ref[b] == 0)
        if num_new > pool.num_free - reviving:
            return None
        for b, h in hits:
            if b < 0:
                self._tiers[-1 - b].hit(h)  # keep planned loads from being evicted by this allocation
        pool.touch(gpu_hits)
        new = pool.allocate(num_new)
        assert new is not None  # NOTE: checked above; touch() only consumed the revived blocks
        blocks: list[int] = []
        run_start = -1
        for j, (b, h) in enumerate(hits):
            if b >= 0:
                blocks.append(b)
                if run_start >= 0:
                    self._store_event(s, run_start, j)
                    run_start = -1
                continue
            nb = new.pop(0)
            blocks.append(nb)
            pool.cache_block(nb, h)
            loaded[-1 - b] += 1
            self.num_tier_hit_tokens += bs
            if run_start < 0:
                run_start = j
        if run_start >= 0:
            self._store_event(s, run_start, len(hits))
        blocks.extend(new)
        s.blocks = blocks
        s.num_computed = computed
        s.num_cached_blocks = len(hits)
        transfer_s = 0.0
        if remote:
            transfer_s = max(0, computed - num_hit) * cfg.kv_bytes_per_token / cfg.kv_transfer_bandwidth_bps
        if first:
            s.started = True
            s.num_cached_tokens = num_hit
            self.prefix_cache_queries += num_tokens
            self.prefix_cache_hits += len(gpu_hits) * bs
        return s, n, transfer_s

    def _extend_hashes(self, s: _Seq, num_full: int) -> None:
        have = len(s.hashes)
        if num_full > have:
            parent = s.hashes[-1] if have else None
            s.hashes += hash_blocks(
                s.tokens,
                self.config.block_size,
                have,
                num_full,
                parent,
                self._hseed,
                s.req.lora_name,
                s.req.cache_salt,
            )

    def _cache_full_blocks(self, s: _Seq) -> None:
        """Register blocks that became full this step and announce them in one ``BlockStored``."""
        full = s.num_computed // self.config.block_size
        start = s.num_cached_blocks
        if full <= start:
            return
        self._extend_hashes(s, full)
        cache_block, blocks, hashes = self.pool.cache_block, s.blocks, s.hashes
        for j in range(start, full):
            cache_block(blocks[j], hashes[j])
        s.num_cached_blocks = full
        self._store_event(s, start, full)

    def _store_event(self, s: _Seq, start: int, end: int) -> None:
        bs, req = self.config.block_size, s.req
        if req.lora_name:
            extra: list[list[str] | None] = [[req.lora_name] for _ in range(start, end)]
        else:
            extra = [None] * (end - start)
        if start == 0 and req.cache_salt:
            extra[0] = list(block_extra_keys(0, req.lora_name, req.cache_salt))
        hashes: list[BlockHash] = list(s.hashes[start:end])
        self.pool.events.append(
            BlockStored(
                hashes,
                s.hashes[start - 1] if start else None,
                s.tokens[start * bs : end * bs],
                bs,
                s.lora_id,
                MEDIUM_GPU,
                req.lora_name,
                extra,
            )
        )

    def _offload(self, block_hash: int) -> None:
        """A hash's last GPU copy was evicted: push it down the tiers (CPU, then storage)."""
        h: int | None = block_hash
        for tier in self._tiers:
            if h is None:
                return
            if h in tier:
                tier.hit(h)
                return
            self.pool.events.append(BlockStored([h], None, [], self.config.block_size, None, tier.medium))
            h = tier.insert(h)
            if h is not None:
                self.pool.events.append(BlockRemoved([h], tier.medium))

    # ---- sampling ----------------------------------------------------------------------------------
    def _sample(self, s: _Seq) -> RequestTokens:
        """Sample one token (the hot path: once per running sequence per step)."""
        tok = int(s.rng.random() * self._vocab)
        k = s.num_output = s.num_output + 1
        reason: FinishReason | None = None
        req = s.req
        if s.eos_id is not None and k > req.min_tokens and s.rng.random() < self._eos_p:
            tok, reason = s.eos_id, "stop"
        elif k >= s.stop_at:
            reason = "length"
        s.tokens.append(tok)
        self.num_generation_tokens += 1
        if k == 1:
            self.num_prompt_tokens += len(req.prompt_token_ids)
        out = RequestTokens(req.request_id, [tok], reason, s.num_cached_tokens, k == 1, s.num_preemptions)
        if reason is not None:
            self._free(s)
            self._finish(s)
        return out

    # ---- introspection -------------------------------------------------------------------------
    def stats(self) -> EngineStats:
        cfg = self.config
        return EngineStats(
            len(self.running),
            len(self.waiting),
            self.pool.usage,
            cfg.num_gpu_blocks,
            cfg.block_size,
            self.prefix_cache_queries,
            self.prefix_cache_hits,
            self.num_preemptions,
            cfg.num_cpu_blocks,
            self.num_prompt_tokens,
            self.num_generation_tokens,
            self.num_tier_hit_tokens,
        )

    def reset_prefix_cache(self) -> bool:
        """Forget all cached blocks (all tiers); False while requests hold blocks, as vLLM.

        ``AllBlocksCleared`` goes out with the next step's events (vLLM publishes it then too), so a
        driver should call ``step`` once even when idle."""
        if not self.pool.reset():
            return False
        for tier in self._tiers:
            tier.clear()
        self.pool.events.append(AllBlocksCleared())
        return True
