"""Progress bars on stderr: one over a run's steps, one over a sweep's members."""

from __future__ import annotations

import sys
import time
from typing import Any


class _ProgressBar:
    """A rich progress bar on stderr that appears only once a run has taken over a second."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._first: tuple[int, float] | None = None  # (step, clock) of the first update
        self._bar: Any = None  # a rich Progress once shown
        self._task: Any = None

    def __call__(self, step: int, sim_time: float, written: int, total: int | None) -> None:
        now = time.perf_counter()
        if self._first is None:
            self._first = (step, now)
        # A resumed run starts at its checkpoint: the rate counts only steps taken here.
        first_step, first_clock = self._first
        rate = (step - first_step) / (now - first_clock) if now > first_clock else 0.0
        # Every column's field is set when the task is added: rich renders from its own
        # refresh thread, possibly before the first update.
        fields = {"sim_time": sim_time, "written": written, "rate": rate,
                  "steps": f"{step:>8d}" + (f"/{total}" if total is not None else "")}
        if self._bar is None:
            if now - self._start < 1.0:
                return
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("step {task.fields[steps]}"), BarColumn(),
                TextColumn("t={task.fields[sim_time]:.4g}"),
                TextColumn("{task.fields[rate]:.0f} steps/s"),
                TextColumn("{task.fields[written]} captures"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True)
            self._task = self._bar.add_task("run", total=total, completed=step, **fields)
            self._bar.start()
        self._bar.update(self._task, completed=step, total=total, **fields)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _progress_bar(quiet: bool) -> _ProgressBar | None:
    """A progress bar when stderr is a terminal and not ``--quiet``."""
    return _ProgressBar() if not quiet and sys.stderr.isatty() else None


class _MembersBar:
    """A rich progress bar over a sweep's members, on stderr."""

    def __init__(self) -> None:
        self._bar: Any = None  # a rich Progress once shown
        self._task: Any = None

    def __call__(self, ended: int, total: int) -> None:
        if self._bar is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("members"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=True)
            self._task = self._bar.add_task("sweep", total=total, completed=ended)
            self._bar.start()
        self._bar.update(self._task, completed=ended, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()

