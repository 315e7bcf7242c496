"""The schedule kinds: every N steps, explicit steps, log-spaced steps, simulated-time interval,
first and last. Each validates itself when built."""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from simkit.errors import ScenarioError
from simkit.schedule._base import TIME_RTOL, AbstractSchedule, check_state_names

#: The largest step a schedule may name: steps stay exact as float64 and fit int64.
MAX_STEP = 2**53
#: The most steps a log-spaced schedule may list (each is held in memory).
MAX_LOGSPACE_NUM = 100_000


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


class _StepSchedule(AbstractSchedule):
    """A schedule defined by step numbers alone."""

    def next_time(self, after: float) -> float | None:
        return None

    @property
    def at_end(self) -> bool:
        return False


@dataclass(frozen=True)
class Every(_StepSchedule):
    """Fires at steps ``offset, offset + every, offset + 2 * every, ...``."""

    every: int
    offset: int = 0

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
class At(_StepSchedule):
    """Fires at an explicit list of steps, e.g. ``At((2, 5, 8))``."""

    steps: tuple[int, ...]

    def __post_init__(self) -> None:
        steps = tuple(self.steps) if isinstance(self.steps, (list, tuple)) else None
        if not steps or not all(_is_int(s) and s >= 0 for s in steps):
            raise ScenarioError(
                f"expected a non-empty list of integers >= 0, given {self.steps!r}", key="at")
        object.__setattr__(self, "steps", tuple(sorted(set(steps))))

    def next_step(self, after: int) -> int | None:
        i = bisect.bisect_right(self.steps, after)
        return self.steps[i] if i < len(self.steps) else None

    def fires(self, step: int, time: float) -> bool:
        i = bisect.bisect_left(self.steps, step)
        return i < len(self.steps) and self.steps[i] == step


@dataclass(frozen=True)
class LogSpaced(_StepSchedule):
    """Fires at ``num`` steps spaced evenly in log between ``start`` and ``stop`` (rounded,
    duplicates merged), e.g. ``LogSpaced(1, 1000, 4)`` fires at 1, 10, 100, 1000."""

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

    def next_step(self, after: int) -> int | None:
        i = bisect.bisect_right(self.steps, after)
        return self.steps[i] if i < len(self.steps) else None

    def fires(self, step: int, time: float) -> bool:
        i = bisect.bisect_left(self.steps, step)
        return i < len(self.steps) and self.steps[i] == step


@dataclass(frozen=True)
class SimTime(AbstractSchedule):
    """Fires when simulated time reaches ``start + k * interval``; the driver shortens the time
    step before each target so the run lands on it exactly."""

    interval: float
    start: float = 0.0

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


@dataclass(frozen=True)
class First(_StepSchedule):
    """Fires at step 0, the initial state."""

    def next_step(self, after: int) -> int | None:
        return 0 if after < 0 else None

    def fires(self, step: int, time: float) -> bool:
        return step == 0


@dataclass(frozen=True)
class Last(_StepSchedule):
    """Fires at the final state, wherever the run ends."""

    def next_step(self, after: int) -> int | None:
        return None

    def fires(self, step: int, time: float) -> bool:
        return False

    @property
    def at_end(self) -> bool:
        return True


class _DriverDecided(AbstractSchedule):
    """Fires on events the driver observes (device conditions, wall clock), not on step counts."""

    def next_step(self, after: int) -> int | None:
        return None

    def next_time(self, after: float) -> float | None:
        return None

    def fires(self, step: int, time: float) -> bool:
        return False

    @property
    def at_end(self) -> bool:
        return False


def _check_condition(condition: When | While, form: str) -> None:
    """A condition names a diagnostic and exactly one finite threshold."""
    if not isinstance(condition.diagnostic, str) or not condition.diagnostic:
        hint = (" (YAML reads unquoted on, off, yes and no as true or false: quote such a name)"
                if isinstance(condition.diagnostic, bool) else "")
        raise ScenarioError(f"expected a diagnostic name, given {condition.diagnostic!r}{hint}",
                            key=f"{form}.diagnostic")
    if (condition.above is None) == (condition.below is None):
        raise ScenarioError(f"expected exactly one of 'above' or 'below', given above="
                            f"{condition.above!r}, below={condition.below!r}", key=form)
    for name in ("above", "below"):
        value = getattr(condition, name)
        if value is not None and not _is_number(value):
            raise ScenarioError(f"expected a finite number, given {value!r}", key=f"{form}.{name}")


@dataclass(frozen=True)
class While(Every):
    """Level-triggered: fires at steps ``every, 2 * every, ...`` (and the initial state) at which a
    diagnostic is above (or below) a threshold, evaluated on the device inside the block.

    The step numbers are the candidates; the condition decides on the device which of them are
    captured, so a run captures every step (thinned by ``every``) *while* the condition holds.
    With ``stage``, the diagnostic is evaluated on the state right after that stage of the
    step (where the stage's probes are), not on the end-of-step state; the initial state, which
    no stage has made, never holds.
    """

    diagnostic: str = ""
    above: float | None = None
    below: float | None = None
    stage: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_condition(self, "while")
        if self.stage is not None and (not isinstance(self.stage, str) or not self.stage):
            raise ScenarioError(f"expected a stage name, given {self.stage!r}", key="while.stage")

    def holds(self, value: float) -> bool:
        """The condition on a host value (the device evaluates the same comparison)."""
        return value > self.above if self.above is not None else value < self.below


@dataclass(frozen=True)
class When(_DriverDecided):
    """Fires at the first step where a diagnostic rises above (or falls below) a threshold.

    Edge-triggered: it fires again only after the condition has been false. ``cooldown`` steps
    after a firing are ignored. The condition is evaluated on the device inside the compiled
    loop, which stops at that step.
    """

    diagnostic: str
    above: float | None = None
    below: float | None = None
    cooldown: int = 0
    #: Take the diagnostic of the state right after this stage of each step (its probes).
    stage: str | None = None

    def __post_init__(self) -> None:
        _check_condition(self, "when")
        if not _is_int(self.cooldown) or self.cooldown < 0:
            raise ScenarioError(f"expected an integer >= 0, given {self.cooldown!r}",
                                key="when.cooldown")
        if self.stage is not None:
            if not isinstance(self.stage, str) or not self.stage:
                raise ScenarioError(f"expected a stage name, given {self.stage!r}",
                                    key="when.stage")
            self._state["held"] = 0

    def holds(self, value: float) -> bool:
        """The condition on a host value (the device evaluates the same comparison)."""
        return value > self.above if self.above is not None else value < self.below

    # The edge memory (was the condition true at the step before?) is the condition on the state
    # the run stands at: the loop evaluates it from the state itself, so a run resumed from a
    # checkpointed state sees the same edges. A condition on a stage's state cannot be taken
    # from the end-of-step state: its memory (``held``) is kept here with the cooldown, which
    # is history too.
    _state: dict[str, int] = field(default_factory=lambda: {"cooldown_until": 0}, init=False,
                                   repr=False, compare=False)

    @property
    def held(self) -> bool:
        """Whether a condition on a stage held at the last step taken (False for others)."""
        return bool(self._state.get("held", 0))

    def hold(self, value: bool) -> None:
        """Record whether a condition on a stage held at the last step taken."""
        if self.stage is not None:
            self._state["held"] = int(bool(value))

    @property
    def resumes_at(self) -> int:
        """The first step at which the condition may fire again (0 before any firing)."""
        return self._state["cooldown_until"]

    def may_fire(self, step: int) -> bool:
        """Whether a rising edge at ``step`` fires (its cooldown has passed)."""
        return step >= self._state["cooldown_until"]

    def fired(self, step: int) -> None:
        """Record a firing at ``step``: the next ``cooldown`` steps are ignored."""
        self._state["cooldown_until"] = step + self.cooldown + 1

    def save(self) -> dict[str, float]:
        return dict(self._state)

    def restore(self, state: Mapping[str, float]) -> None:
        check_state_names(self, state)
        self._state.update({name: int(value) for name, value in state.items()})

    def reset(self) -> None:
        self._state.update({name: 0 for name in self._state})


@dataclass(frozen=True)
class WallTime(_DriverDecided):
    """Fires at the first step boundary after each ``seconds`` of wall-clock time; the driver
    sizes compiled segments from the measured step rate so it needs no per-step host sync."""

    seconds: float
    #: Seconds from some fixed point; a fake clock in tests.
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False, compare=False)
    # The clock reading at which it fires next (None: not started). Saved as the seconds left, so
    # a resumed run's first capture comes as long after the checkpoint as it would have.
    _state: dict[str, float | None] = field(default_factory=lambda: {"deadline": None},
                                            init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _is_number(self.seconds) or self.seconds <= 0:
            raise ScenarioError(f"expected a finite number of seconds > 0, given "
                                f"{self.seconds!r}", key="wall_time")

    def seconds_left(self) -> float:
        """Wall-clock seconds until it fires next (negative once overdue)."""
        deadline = self._state["deadline"]
        if deadline is None:
            self.reset()
            return self.seconds
        return deadline - self.clock()

    def due(self) -> bool:
        """Whether the interval since the start (or the last firing) has passed."""
        return self.seconds_left() <= 0

    def fired(self) -> None:
        """Record a firing now: the next one comes ``seconds`` later."""
        self._state["deadline"] = self.clock() + self.seconds

    def save(self) -> dict[str, float]:
        return {"seconds_left": max(0.0, self.seconds_left())}

    def restore(self, state: Mapping[str, float]) -> None:
        check_state_names(self, state)
        self._state["deadline"] = self.clock() + float(state["seconds_left"])

    def reset(self) -> None:
        self._state["deadline"] = self.clock() + self.seconds


def fixed_in_steps(member: AbstractSchedule) -> bool:
    """Whether ``member`` (one schedule, not a union) fires at steps known before a run: every,
    at, logspace, first, last; not a condition, a clock or simulated times."""
    return isinstance(member, _StepSchedule) and not isinstance(member, While)

