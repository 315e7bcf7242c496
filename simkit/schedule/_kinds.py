"""The schedule kinds, each registered under its scenario key when its class is defined.

A new kind is one class here: it declares its key, its form, the JSON schema of its value,
how it is built from scenario data (``from_spec``, validating itself when built) and when it
fires; parsing, the typed stream spec, its JSON schema and the capture engine take it from the
registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from simkit.errors import ScenarioError
from simkit.schedule._conditions import WallTime, When, While
from simkit.schedule._steps import (
    _INT_0,
    _INT_1,
    MAX_STEP,
    At,
    Every,
    First,
    Last,
    LogSpaced,
    SimTime,
    _is_int,
    _StepSchedule,
)

__all__ = ["MAX_STEP", "At", "Every", "First", "Last", "LogSpaced", "SimTime", "WallTime",
           "When", "While", "Window"]


@dataclass(frozen=True)
class Window(_StepSchedule):
    """Fires at steps ``start, start + every, ...`` up to ``stop`` (included): dense captures
    inside a window of the run, e.g. ``Window(1000, 2000, 10)``."""

    kind: ClassVar[str] = "window"
    form: ClassVar[str] = "window: {start: S, stop: E [, every: N]}"
    keys: ClassVar[tuple[str, ...]] = ("start", "stop", "every")
    shape: ClassVar[str] = "{start: S, stop: E [, every: N]}"
    defaults: ClassVar[dict[str, Any]] = {"every": 1}
    value_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "properties": {"start": _INT_0, "stop": _INT_0, "every": _INT_1},
        "required": ["start", "stop"], "additionalProperties": False}

    start: int
    stop: int
    every: int = 1

    def __post_init__(self) -> None:
        if not _is_int(self.start) or not 0 <= self.start <= MAX_STEP:
            raise ScenarioError(f"expected an integer from 0 to {MAX_STEP}, given "
                                f"{self.start!r}", key="window.start")
        if not _is_int(self.stop) or not self.start <= self.stop <= MAX_STEP:
            raise ScenarioError(f"expected an integer from start ({self.start}) to {MAX_STEP}, "
                                f"given {self.stop!r}", key="window.stop")
        if not _is_int(self.every) or self.every < 1:
            raise ScenarioError(f"expected an integer >= 1, given {self.every!r}",
                                key="window.every")

    def next_step(self, after: int) -> int | None:
        step = self.start if after < self.start else (
            self.start + ((after - self.start) // self.every + 1) * self.every)
        return step if step <= self.stop else None

    def fires(self, step: int, time: float) -> bool:
        return self.start <= step <= self.stop and (step - self.start) % self.every == 0

    def step_count(self, steps: int) -> int:
        last = min(steps, self.stop)
        return 0 if last < self.start else (last - self.start) // self.every + 1
