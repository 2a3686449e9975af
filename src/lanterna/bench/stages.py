"""The stage ladder and sweep-to-saturation driver, shared by the HTTP runner and the virtual cluster.

Why one driver: the two runners decided "next rate" and "saturated, stop" separately and drifted (the virtual
cluster skipped the saturation check on the first sweep rate). This is pure: no clock, no I/O. The caller runs
each plan it is given and feeds back that stage's summary; the driver decides what comes next::

    driver = StageDriver(cfg.load)
    summary = None
    while (plan := driver.next(summary)) is not None:
        summary = run(plan).summary

Order: the warm-up (index -1), the configured stages, then the sweep's geometric rates, which stop after the
first stage that is saturated (``is_saturated``: TTFT p50 above its cap, checked from the first rate on, or
output throughput gaining less than ``min_gain`` over the previous rate).
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum

from lanterna.bench.config import LoadConfig
from lanterna.bench.load import StagePlan, is_saturated, plan_stages, sweep_rates, sweep_stage
from lanterna.bench.metrics import StageSummary


class SweepEnd(Enum):
    SATURATED = "saturated"
    MAX_RATE = "max_rate"


class StageDriver:
    """Plans stages one at a time; ``next`` takes the summary of the plan it returned last (None at first)."""

    def __init__(self, load: LoadConfig) -> None:
        if load.type == "trace":
            raise ValueError("a trace replay is one stage; it has no ladder to drive")
        self.load = load
        self.sweep_end: SweepEnd | None = None  # why the sweep stopped, once it has
        self._last: StageSummary | None = None
        self._plans = self._iter()
        self._pending = False

    def next(self, last: StageSummary | None) -> StagePlan | None:
        """The next stage to run, or None when the run is over."""
        if self._pending and last is None:
            raise ValueError("feed back the summary of the stage that ran")
        self._last = last
        plan = next(self._plans, None)
        self._pending = plan is not None
        return plan

    def _iter(self) -> Iterator[StagePlan]:
        yield from plan_stages(self.load)
        sw = self.load.sweep
        if sw is None:
            return
        first = len(self.load.stages)
        prev: float | None = None
        for i, rate in enumerate(sweep_rates(sw)):
            yield StagePlan(first + i, sweep_stage(sw, rate), self.load.type)
            s = self._last
            assert s is not None
            tps = s.throughput.output_tokens_per_s
            if is_saturated(prev, tps, s.ttft_p50_s, sw):
                self.sweep_end = SweepEnd.SATURATED
                return
            prev = tps
        self.sweep_end = SweepEnd.MAX_RATE
