"""A rich progress bar per stage (sent/completed, failures); a no-op when disabled or not a terminal."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class StageProgress:
    def __init__(self, enabled: bool = True) -> None:
        self._p: Progress | None = None
        if enabled:
            self._p = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("failed {task.fields[failed]}"), TimeElapsedColumn(), refresh_per_second=4,
            )
        self._failed: dict[Any, int] = {}

    def __enter__(self) -> StageProgress:
        if self._p is not None:
            self._p.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._p is not None:
            self._p.stop()

    def add(self, label: str, total: int | None) -> Any:
        if self._p is None:
            return None
        task = self._p.add_task(label, total=total, failed=0)
        self._failed[task] = 0
        return task

    def advance(self, task: Any, ok: bool = True) -> None:
        if self._p is None or task is None:
            return
        if not ok:
            self._failed[task] += 1
            self._p.update(task, advance=1, failed=self._failed[task])
        else:
            self._p.update(task, advance=1)
