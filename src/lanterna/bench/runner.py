"""The HTTP load generator: open-loop schedules (constant, Poisson, trace) and closed-loop concurrency.

Why open loop: a generator that waits for responses before sending hides overload. The dispatcher
prepares the next body, sleeps until its due time, then spawns the request; each record keeps its
scheduled and actual send times, so the report states achieved vs requested rate and the lag. In-flight
requests are bounded by ``load.max_in_flight`` (a full window delays sends, and the lag shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
from collections.abc import Iterator
from typing import Any

import aiohttp

from lanterna.bench.config import BenchConfig, HttpTarget, Stage
from lanterna.bench.http_client import build_body, send
from lanterna.bench.load import StagePlan, arrival_offsets, arrival_rng
from lanterna.bench.metrics import RequestRecord, StageSummary, summarize
from lanterna.bench.progress import StageProgress
from lanterna.bench.report import RunResult, StageResult, now_utc
from lanterna.bench.stages import StageDriver
from lanterna.bench.text import TextRenderer
from lanterna.bench.workloads import WorkItem, iter_workload


class HttpRunner:
    def __init__(self, cfg: BenchConfig, *, progress: bool = True, renderer: TextRenderer | None = None) -> None:
        assert cfg.target is not None
        self.cfg = cfg
        self.target: HttpTarget = cfg.target
        self.items: Iterator[WorkItem] = iter_workload(cfg.workload, cfg.seed)
        self.rng = arrival_rng(cfg.seed)
        if renderer is None:
            from lanterna.models.tokenizer import load_tokenizer

            renderer = TextRenderer(load_tokenizer(self.target.tokenizer))
        self.renderer = renderer
        self.progress = StageProgress(enabled=progress)
        self._ids = itertools.count()
        self._sem = asyncio.Semaphore(cfg.load.max_in_flight)
        self._session: aiohttp.ClientSession | None = None
        self._t0 = 0.0

    def now(self) -> float:
        return asyncio.get_running_loop().time() - self._t0

    async def run(self) -> RunResult:
        # NOTE: the generator allocates many small objects per request; full GC passes over a large heap
        # stall the dispatcher for tens of ms (schedule lag), so young-generation collection is made rarer.
        old_threshold = gc.get_threshold()
        gc.set_threshold(50_000, 20, 100)
        try:
            return await self._run()
        finally:
            gc.set_threshold(*old_threshold)

    async def _run(self) -> RunResult:
        started = now_utc()
        self._t0 = asyncio.get_running_loop().time()
        conn = aiohttp.TCPConnector(limit=self.cfg.load.max_in_flight, limit_per_host=0, ttl_dns_cache=300)
        stages: list[StageResult] = []
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None)) as session:
            self._session = session
            with self.progress:
                if self.cfg.load.type == "trace":
                    stages.append(await self._trace_stage())
                else:
                    driver = StageDriver(self.cfg.load)
                    last: StageSummary | None = None
                    while (plan := driver.next(last)) is not None:
                        res = await self._stage(plan)
                        last = res.summary
                        if not plan.is_warmup:
                            stages.append(res)
        return RunResult(self.cfg, stages, started, now_utc(), "http")

    async def _stage(self, plan: StagePlan) -> StageResult:
        st = plan.stage
        if st.concurrency is not None:
            records = await self._closed_loop(plan.index, st, plan.label)
        else:
            offsets = arrival_offsets(st, plan.kind, self.rng)
            total = st.num_requests or (int(st.rate * st.duration_s) if st.rate and st.duration_s else None)
            records = await self._open_loop(plan.index, offsets, plan.label, total)
        summary = summarize(records, requested_rate=st.rate, concurrency=st.concurrency, slo=self.cfg.slo)
        return StageResult(plan.index, plan.label, summary, records)

    async def _trace_stage(self) -> StageResult:
        items = list(self.items)  # trace length is bounded by the file / max_requests
        self.items = iter(items)
        span = (items[-1].arrival_s or 0.0) if items else 0.0
        records = await self._open_loop(0, (it.arrival_s or 0.0 for it in items), "trace", len(items))
        rate = (len(items) - 1) / span if span > 0 else None
        return StageResult(0, "trace", summarize(records, requested_rate=rate, slo=self.cfg.slo), records)

    def _prepare(self, stage: int) -> tuple[RequestRecord, bytes, dict[str, str]] | None:
        item = next(self.items, None)
        if item is None:
            return None
        rid = f"bench-{next(self._ids)}"
        rec = RequestRecord(rid, stage, 0.0, 0.0, prompt_tokens=item.num_prompt_tokens, group=item.group)
        headers = {"content-type": "application/json", "x-request-id": rid, **self.target.headers}
        return rec, build_body(self.target, item, self.renderer), headers

    async def _one(self, rec: RequestRecord, body: bytes, headers: dict[str, str], bar: Any) -> None:
        try:
            assert self._session is not None
            await send(self._session, self.target, body, rec, self.now, headers)
        finally:
            self._sem.release()
            self.progress.advance(bar, ok=rec.ok)

    async def _open_loop(self, stage: int, offsets: Any, label: str, total: int | None) -> list[RequestRecord]:
        records: list[RequestRecord] = []
        tasks: set[asyncio.Task[None]] = set()
        bar = self.progress.add(label, total)
        t_stage = self.now()
        try:
            for off in offsets:
                prepared = self._prepare(stage)
                if prepared is None:
                    break
                rec, body, headers = prepared
                due = t_stage + off
                delay = due - self.now()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._sem.acquire()
                rec.scheduled_s, rec.send_s = due, self.now()
                records.append(rec)
                task = asyncio.create_task(self._one(rec, body, headers, bar))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        return records

    async def _closed_loop(self, stage: int, st: Stage, label: str) -> list[RequestRecord]:
        assert st.concurrency is not None
        records: list[RequestRecord] = []
        bar = self.progress.add(label, st.num_requests)
        t_end = self.now() + st.duration_s if st.duration_s else None

        async def worker() -> None:
            while (t_end is None or self.now() < t_end) and (st.num_requests is None or len(records) < st.num_requests):
                prepared = self._prepare(stage)
                if prepared is None:
                    return
                rec, body, headers = prepared
                await self._sem.acquire()
                rec.scheduled_s = rec.send_s = self.now()
                records.append(rec)
                await self._one(rec, body, headers, bar)

        await asyncio.gather(*(worker() for _ in range(st.concurrency)))
        return records


def run_http(cfg: BenchConfig, *, progress: bool = True) -> RunResult:
    """Run a benchmark against ``cfg.target`` on a fresh event loop (uvloop when installed)."""
    factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(HttpRunner(cfg, progress=progress).run())
