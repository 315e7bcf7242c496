"""The schedule kinds decided by step count or simulated time: every N steps, explicit steps,
log-spaced steps, simulated-time interval, first and last. Each validates itself when built."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from simkit.errors import ScenarioError
from simkit.schedule._base import TIME_RTOL, AbstractSchedule

#: The largest step a schedule may name: steps stay exact as float64 and fit int64.
MAX_STEP = 2**53
#: The most steps a log-spaced schedule may list (each is held in memory).
MAX_LOGSPACE_NUM = 100_000


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


_INT_1 = {"type": "integer", "minimum": 1}
_INT_0 = {"type": "integer", "minimum": 0}
_FLAG = {"type": "boolean"}


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"expected true or false, given {value!r}", key=key)
    return value


class _StepSchedule(AbstractSchedule):
    """A schedule defined by step numbers alone, known before the run."""

    def next_time(self, after: float) -> float | None:
        return None

    @property
    def at_end(self) -> bool:
        return False

    @property
    def known_in_advance(self) -> bool:
        return True


class _Listed(_StepSchedule):
    """A schedule of explicitly listed steps (sorted, distinct)."""

    steps: tuple[int, ...]

    @property
    def listed_steps(self) -> tuple[int, ...]:
        return self.steps

    def next_step(self, after: int) -> int | None:
        i = bisect.bisect_right(self.steps, after)
        return self.steps[i] if i < len(self.steps) else None

    def fires(self, step: int, time: float) -> bool:
        i = bisect.bisect_left(self.steps, step)
        return i < len(self.steps) and self.steps[i] == step

    def step_count(self, steps: int) -> int:
        return bisect.bisect_right(self.steps, steps)


@dataclass(frozen=True)
class Every(_StepSchedule):
    """Fires at steps ``offset, offset + every, offset + 2 * every, ...``.

    Step 0 is the initial state, so ``Every(100)`` captures it and every 100th step after;
    ``Every(100, offset=50)`` captures steps 50, 150, ... In a scenario: ``every: 100``
    (``offset: 50``).
    """

    kind: ClassVar[str] = "every"
    form: ClassVar[str] = "every: N [offset: K]"
    value_schema: ClassVar[dict[str, Any]] = _INT_1
    modifiers: ClassVar[dict[str, dict[str, Any]]] = {"offset": _INT_0}

    every: int
    offset: int = 0

    @classmethod
    def from_spec(cls, value: Any, spec: Mapping[str, Any], key: str
                  ) -> list[AbstractSchedule]:
        return [cls(value, spec.get("offset", 0))]

    @property
    def every_step(self) -> bool:
        return self.every == 1

    def step_count(self, steps: int) -> int:
        return 0 if steps < self.offset else (steps - self.offset) // self.every + 1

    def __post_init__(self) -> None:
        if not _is_int(self.every) or self.every < 1:
            raise ScenarioError(f"expected an integer >= 1, given {self.every!r}", key="every")
        if not _is_int(self.offset) or self.offset < 0:
            raise ScenarioError(f"expected an integer >= 0, given {self.offset!r}", key="offset")

    def next_step(self, after: int) -> int | None:
        if after < self.offset:
            return self.offset
        return self.offset + ((after - self.offset) // self.every + 1) * self.every

    def fires(self, step: int, time: float) -> bool:
        return step >= self.offset and (step - self.offset) % self.every == 0


@dataclass(frozen=True)
class At(_Listed):
    """Fires at an explicit list of steps, e.g. ``At((2, 5, 8))``.

    In a scenario: ``at: [2, 5, 8]``. Steps after the run's last step draw a warning.
    """

    kind: ClassVar[str] = "at"
    form: ClassVar[str] = "at: [2, 5, 8]"
    value_schema: ClassVar[dict[str, Any]] = {"type": "array", "items": _INT_0, "minItems": 1}

    steps: tuple[int, ...]

    def __post_init__(self) -> None:
        steps = tuple(self.steps) if isinstance(self.steps, (list, tuple)) else None
        if not steps or not all(_is_int(s) and s >= 0 for s in steps):
            raise ScenarioError(
                f"expected a non-empty list of integers >= 0, given {self.steps!r}", key="at")
        object.__setattr__(self, "steps", tuple(sorted(set(steps))))


@dataclass(frozen=True)
class LogSpaced(_Listed):
    """Fires at ``num`` steps spaced evenly in log between ``start`` and ``stop`` (rounded,
    duplicates merged), e.g. ``LogSpaced(1, 1000, 4)`` fires at 1, 10, 100, 1000."""

    kind: ClassVar[str] = "logspace"
    form: ClassVar[str] = "logspace: {start: 1, stop: 1000, num: 4}"
    value_schema: ClassVar[dict[str, Any]] = {"oneOf": [
        {"type": "object", "properties": {"start": _INT_1, "stop": _INT_1, "num": _INT_1},
         "required": ["start", "stop", "num"], "additionalProperties": False},
        {"type": "array", "items": _INT_1, "minItems": 3, "maxItems": 3}]}

    @classmethod
    def from_spec(cls, value: Any, spec: Mapping[str, Any], key: str
                  ) -> list[AbstractSchedule]:
        if isinstance(value, (list, tuple)) and len(value) == 3:
            return [cls(*value)]
        if isinstance(value, Mapping) and set(value) == {"start", "stop", "num"}:
            return [cls(value["start"], value["stop"], value["num"])]
        raise ScenarioError(f"expected {{start: S, stop: E, num: N}} or [S, E, N], given {value!r}",
                            key=key)

    start: int
    stop: int
    num: int
    steps: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _is_int(self.start) or self.start < 1:
            raise ScenarioError(f"expected an integer >= 1, given {self.start!r}",
                                key="logspace.start")
        if not _is_int(self.stop) or self.stop < self.start:
            raise ScenarioError(f"expected an integer >= start ({self.start}), given {self.stop!r}",
                                key="logspace.stop")
        if self.stop > MAX_STEP:
            raise ScenarioError(f"expected an integer <= {MAX_STEP}, given {self.stop!r}",
                                key="logspace.stop")
        if not _is_int(self.num) or not 1 <= self.num <= MAX_LOGSPACE_NUM:
            raise ScenarioError(f"expected an integer from 1 to {MAX_LOGSPACE_NUM}, given "
                                f"{self.num!r}", key="logspace.num")
        # Computed once: the driver asks for the next step at every capture.
        if self.num == 1:
            steps: tuple[int, ...] = (self.start,)
        else:
            ratio = math.log(self.stop / self.start) / (self.num - 1)
            steps = tuple(sorted({round(self.start * math.exp(i * ratio))
                                  for i in range(self.num)}))
        object.__setattr__(self, "steps", steps)


@dataclass(frozen=True)
class SimTime(AbstractSchedule):
    """Fires when simulated time reaches ``start + k * interval``; the driver shortens the time
    step before each target so the run lands on it exactly."""

    kind: ClassVar[str] = "sim_time"
    form: ClassVar[str] = "sim_time: T [start: T0]"
    value_schema: ClassVar[dict[str, Any]] = {"type": "number", "exclusiveMinimum": 0}
    modifiers: ClassVar[dict[str, dict[str, Any]]] = {"start": {"type": "number", "minimum": 0}}

    interval: float
    start: float = 0.0

    @classmethod
    def from_spec(cls, value: Any, spec: Mapping[str, Any], key: str
                  ) -> list[AbstractSchedule]:
        return [cls(value, spec.get("start", 0.0))]

    def time_count(self, end_time: float) -> int:
        span = end_time * (1 + 1e-12) - self.start
        return 0 if span < 0 else math.floor(span / self.interval) + 1

    def __post_init__(self) -> None:
        if not _is_number(self.interval) or self.interval <= 0:
            raise ScenarioError(f"expected a finite number > 0, given {self.interval!r}",
                                key="sim_time")
        if not _is_number(self.start) or self.start < 0:
            raise ScenarioError(f"expected a finite number >= 0, given {self.start!r}",
                                key="start")

    def _tolerance(self) -> float:
        return TIME_RTOL * max(self.interval, abs(self.start))

    def next_step(self, after: int) -> int | None:
        return None

    def next_time(self, after: float) -> float | None:
        if after < self.start - self._tolerance():
            return self.start
        k = max(0, math.floor((after - self.start) / self.interval))
        while self.start + k * self.interval <= after + self._tolerance():
            k += 1
        return self.start + k * self.interval

    def fires(self, step: int, time: float) -> bool:
        if time < self.start - self._tolerance():
            return False
        k = round((time - self.start) / self.interval)
        return abs(time - (self.start + k * self.interval)) <= self._tolerance()

    @property
    def at_end(self) -> bool:
        return False


class _Flagged(_StepSchedule):
    """A schedule said by a flag (``first: true``): true makes it, false makes none."""

    value_schema: ClassVar[dict[str, Any]] = _FLAG

    @classmethod
    def from_spec(cls, value: Any, spec: Mapping[str, Any], key: str
                  ) -> list[AbstractSchedule]:
        return [cls()] if _flag(value, key) else []


@dataclass(frozen=True)
class First(_Flagged):
    """Fires at step 0, the initial state. In a scenario: ``first: true``."""

    kind: ClassVar[str] = "first"
    form: ClassVar[str] = "first: true"

    def step_count(self, steps: int) -> int:
        return 1

    def next_step(self, after: int) -> int | None:
        return 0 if after < 0 else None

    def fires(self, step: int, time: float) -> bool:
        return step == 0


@dataclass(frozen=True)
class Last(_Flagged):
    """Fires at the final state, wherever the run ends (its last step, or where ``stop_when``
    ended it). In a scenario: ``last: true``."""

    kind: ClassVar[str] = "last"
    form: ClassVar[str] = "last: true"

    @property
    def known_in_advance(self) -> bool:
        return False

    def next_step(self, after: int) -> int | None:
        return None

    def fires(self, step: int, time: float) -> bool:
        return False

    @property
    def at_end(self) -> bool:
        return True
