"""Drivers for engine tests: run steps in virtual time and collect what came out."""

from __future__ import annotations

from dataclasses import dataclass, field

from lanterna.protocol.kv_events import KVEvent
from lanterna.sim.engine import Engine, EngineConfig
from lanterna.sim.tiers import KVTier
from lanterna.sim.timing import ConstantTimer
from lanterna.sim.types import EngineRequest, RequestTokens, StepOutput


def make_engine(seed: int = 0, storage: KVTier | None = None, **cfg: object) -> Engine:
    """A small engine: 4-token blocks, 64 blocks, 64-token budget, 10 ms steps."""
    base: dict[str, object] = {"block_size": 4, "num_gpu_blocks": 64, "max_num_batched_tokens": 64}
    base.update(cfg)
    return Engine(EngineConfig(**base), ConstantTimer(0.01), seed=seed, storage=storage)  # type: ignore[arg-type]


def req(rid: str, prompt: list[int] | int, max_tokens: int = 4, **kw: object) -> EngineRequest:
    tokens = list(range(100, 100 + prompt)) if isinstance(prompt, int) else prompt
    return EngineRequest(rid, tokens, max_tokens, 0.0, **kw)  # type: ignore[arg-type]


@dataclass
class Run:
    steps: list[StepOutput] = field(default_factory=list)
    tokens: dict[str, list[int]] = field(default_factory=dict)
    finish: dict[str, str] = field(default_factory=dict)
    cached: dict[str, int] = field(default_factory=dict)
    events: list[KVEvent] = field(default_factory=list)
    outputs: list[RequestTokens] = field(default_factory=list)
    now: float = 0.0


def run(engine: Engine, max_steps: int = 10_000, into: Run | None = None) -> Run:
    r = into or Run()
    for _ in range(max_steps):
        if not engine.has_work():
            return r
        out = engine.step(r.now)
        r.now += out.duration_s
        r.steps.append(out)
        r.events.extend(out.kv_events)
        for o in out.outputs:
            r.outputs.append(o)
            r.tokens.setdefault(o.request_id, []).extend(o.token_ids)
            if o.first_token:
                r.cached[o.request_id] = o.num_cached_tokens
            if o.finish_reason:
                r.finish[o.request_id] = o.finish_reason
    raise AssertionError("engine did not drain")
