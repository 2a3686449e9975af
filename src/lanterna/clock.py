"""The clock port: pure code takes a ``Clock`` so the simulator can run it in virtual time."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...


class MonotonicClock:
    __slots__ = ()

    now = staticmethod(time.monotonic)  # the builtin itself: no Python frame per read (the gateway reads ~10/request)


class VirtualClock:
    """A clock that only moves when told to; used by the virtual-time cluster and tests."""

    __slots__ = ("_t",)

    def __init__(self, start: float = 0.0) -> None:
        self._t = start

    def now(self) -> float:
        return self._t

    def advance(self, dt: float) -> None:
        if dt < 0:
            raise ValueError("virtual time cannot go backwards")
        self._t += dt

    def set(self, t: float) -> None:
        if t < self._t:
            raise ValueError("virtual time cannot go backwards")
        self._t = t
