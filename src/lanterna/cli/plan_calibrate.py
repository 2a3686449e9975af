"""``lanterna plan cpu-calibrate``: time a live vLLM (the tiny model on CPU) and fit a step-time profile.

    lanterna plan cpu-calibrate --url http://127.0.0.1:8100 --model tiny --out cpu-profile.json

Lone prompts of several lengths (``max_tokens=1``) give prefill latencies; 1..N concurrent streams with short and
long prompts give decode step times (each stream's mean time per token while all are decoding, median over
streams). Prompts are random token ids, new each time, so the prefix cache never hits. The fit
(``planner.calibrate``) is written as JSON; ``load_fit`` reads it back for the simulator. Host costs (API server,
gateway and client CPU per request and token on the replica's cores) need the processes' CPU time, so only
``benchmarks/fidelity/run_fidelity.py``, which starts them, measures them; here they stay zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from lanterna.bench.workloads import WorkItem
from lanterna.planner.calibrate import CpuPhase, HostCost, StepFit, StepSample, fit_steps, host_costs

PREFILL_LENGTHS = (32, 128, 256, 512, 1024)
DECODE_SEQS = (1, 2, 4, 8, 16)
DECODE_PROMPTS = (16, 512)


def _ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(300, 8000) for _ in range(n)]


async def _prefill(s: aiohttp.ClientSession, url: str, model: str, n: int, rng: random.Random) -> float:
    body = {"model": model, "prompt": _ids(rng, n), "max_tokens": 1, "ignore_eos": True}
    t0 = time.perf_counter()
    async with s.post(url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        await r.read()
    return time.perf_counter() - t0


async def _stream(s: aiohttp.ClientSession, url: str, model: str, rng: random.Random, prompt_len: int,
                  out_len: int) -> list[float]:
    """Arrival times of one stream's chunks."""
    body = {"model": model, "prompt": _ids(rng, prompt_len), "max_tokens": out_len, "ignore_eos": True,
            "stream": True}
    times: list[float] = []
    async with s.post(url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.content:
            if line.startswith(b"data: {"):
                times.append(time.perf_counter())
    return times


def _steady_step(streams: list[list[float]]) -> float | None:
    """Median over streams of the mean gap inside the window where every stream is decoding (after the last
    one's first token, before the first one's last): no prefill of a sibling in it. A mean, not single gaps:
    a loaded API server may flush several tokens in one write, making single gaps bimodal."""
    lo = max(t[0] for t in streams)
    hi = min(t[-1] for t in streams)
    gaps = []
    for t in streams:
        inside = [x for x in t if lo <= x <= hi]
        if len(inside) >= 3:
            gaps.append((inside[-1] - inside[0]) / (len(inside) - 1))
    return statistics.median(gaps) if gaps else None


def _gap_cv(times: list[float]) -> float | None:
    """Scatter (stdev / mean) of one stream's token gaps after its first token: single steps' variation. None when
    the gaps are not single steps: too few, or a CPU-starved API server coalescing tokens (near-zero gaps)."""
    gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]
    if len(gaps) < 8:
        return None
    mean = statistics.fmean(gaps)
    if mean <= 0 or sum(g < 0.1 * mean for g in gaps) > 0.05 * len(gaps):
        return None
    return statistics.pstdev(gaps) / mean


async def measure(url: str, model: str, repeats: int = 3, out_len: int = 48, seed: int = 0,
                  prefill_lengths: tuple[int, ...] = PREFILL_LENGTHS,
                  decode_seqs: tuple[int, ...] = DECODE_SEQS,
                  decode_prompts: tuple[int, ...] = DECODE_PROMPTS) -> list[StepSample]:
    """Lone prefills of each length, then ``n`` concurrent streams for each batch size and prompt length (a long
    prompt prices the attention over context); each sample the median of ``repeats``."""
    rng = random.Random(seed)
    samples: list[StepSample] = []
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        await _prefill(s, url, model, 16, rng)  # warm the server
        for n in prefill_lengths:
            times = [await _prefill(s, url, model, n, rng) for _ in range(repeats)]
            samples.append(StepSample(statistics.median(times), prefill_tokens=n))
        for p in decode_prompts:
            length = out_len if p <= 64 else 2 * out_len  # long prompts: a longer ramp, so a longer stream
            for n in decode_seqs:
                med, cvs = [], []
                for _ in range(repeats):
                    streams = await asyncio.gather(*(_stream(s, url, model, rng, p, length) for _ in range(n)))
                    step = _steady_step(list(streams))
                    if step is not None:
                        med.append(step)
                    cv = _gap_cv(streams[0]) if n == 1 else None
                    if cv is not None:
                        cvs.append(cv)
                if med:
                    samples.append(StepSample(statistics.median(med), decode_seqs=n,
                                              context_tokens=n * (p + length // 2),
                                              gap_cv=statistics.median(cvs) if cvs else None))
    return samples


_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int, tree: bool = False) -> float:
    """CPU seconds (user + system) of ``pid`` from ``/proc``, with its live descendants when ``tree`` (vLLM: the
    API server's engine core and worker are its children)."""
    kids: dict[int, list[int]] = {}
    if tree:
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                kids.setdefault(ppid, []).append(int(d))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(f[11]) + int(f[12])) / _TCK
        todo += kids.get(p, [])
    return total


class _Tokens:
    def prompt(self, item: WorkItem) -> list[int]:
        return item.token_ids()

    def messages(self, item: WorkItem) -> list[dict[str, Any]]:  # pragma: no cover - completions only
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class HostMeasurement:
    """Per-component host costs (CPU per request / per output token) and idle CPU rates (cores)."""

    costs: dict[str, HostCost]
    idle_cpu_per_s: dict[str, float]
    phases: dict[str, dict[str, CpuPhase]]


async def measure_host(url: str, model: str, pids: dict[str, tuple[int, bool]], *, prompt_len: int,
                       idle_s: float = 3.0, seed: int = 0, short: tuple[int, int] = (120, 4),
                       long: tuple[int, int, int] = (16, 8, 256)) -> HostMeasurement:
    """CPU per request and per output token of each process in ``pids`` (name -> (pid, with children)) while
    the bench client sends to ``url``: an idle window (background, e.g. a scraped API server rendering
    /metrics), then ``short`` = (requests, concurrency) one-token requests and ``long`` = (requests, concurrency,
    output tokens) streams, random ``prompt_len``-token prompts. The client is this process (``client``)."""
    from lanterna.bench.config import parse_config
    from lanterna.bench.runner import HttpRunner

    comps = {**pids, "client": (os.getpid(), False)}

    def snap() -> dict[str, float]:
        return {k: process_cpu_s(p, t) for k, (p, t) in comps.items()} | {"t": time.perf_counter()}

    a = snap()
    await asyncio.sleep(idle_s)
    b = snap()
    idle = {k: (b[k] - a[k]) / (b["t"] - a["t"]) for k in comps}
    phases: dict[str, dict[str, CpuPhase]] = {}
    for name, out_len, n, conc in (("short", 1, *short), ("long", long[2], long[0], long[1])):
        cfg = parse_config({"name": f"host-{name}", "seed": seed,
                            "workload": {"type": "random", "input_len": prompt_len, "output_len": out_len},
                            "load": {"type": "concurrency", "stages": [{"concurrency": conc, "num_requests": n}]},
                            "target": {"url": url, "model": model, "api": "completions"}})
        a = snap()
        res = await HttpRunner(cfg, progress=False, renderer=_Tokens()).run()  # type: ignore[arg-type]
        b = snap()
        recs = [r for st in res.stages for r in st.records if r.ok]
        tokens = sum(r.output_tokens for r in recs)
        phases[name] = {k: CpuPhase(b[k] - a[k], b["t"] - a["t"], len(recs), tokens,
                                    idle[k] if k != "client" else 0.0) for k in comps}
    costs = {k: host_costs(phases["short"][k], phases["long"][k]) for k in comps}
    return HostMeasurement(costs, idle, phases)


def save_fit(fit: StepFit, samples: list[StepSample], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fit": asdict(fit), "samples": [asdict(s) for s in samples]}, indent=2))


def load_fit(path: Path) -> StepFit:
    return StepFit.from_dict(json.loads(path.read_text())["fit"])


def run_calibrate(args: argparse.Namespace) -> int:
    samples = asyncio.run(measure(args.url.rstrip("/"), args.served_model, args.repeats))
    fit = fit_steps(samples)
    save_fit(fit, samples, args.out)
    for smp in samples:
        what = (f"prefill {smp.prefill_tokens:>5} tokens" if smp.prefill_tokens
                else f"decode {smp.decode_seqs:>3} seqs, {smp.context_tokens:>5} KV tokens")
        print(f"  {what}: measured {smp.seconds * 1e3:7.2f} ms, fit {fit.predict(smp) * 1e3:7.2f} ms")
    print(f"step {fit.step_s * 1e3:.2f} ms + {fit.prefill_chunk_s * 1e3:.2f} ms/prefill chunk + "
          f"{fit.prefill_token_s * 1e6:.1f} us/prefill token + {fit.prefill_pair_s * 1e9:.1f} ns/attention pair + "
          f"{fit.decode_seq_s * 1e3:.3f} ms/decode seq + {fit.decode_ctx_s * 1e9:.1f} ns/decode KV token "
          f"(rms error {fit.rms_rel_error:.1%}); step scatter cv {fit.step_cv:.2f}; written to {args.out}")
    return 0
