"""The schedule kinds decided during a run: a level condition (``while``), an edge condition
(``when``) and a wall-clock interval. Each validates itself when built."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from simkit.errors import ScenarioError
from simkit.schedule._base import AbstractSchedule, Condition, ValueOf
from simkit.schedule._state import ClockState, EdgeState, ScheduleState
from simkit.schedule._steps import _INT_0, _INT_1, Every, _is_int, _is_number


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


_CONDITION = {"diagnostic": {"type": "string", "minLength": 1}, "above": {"type": "number"},
              "below": {"type": "number"}, "stage": {"type": "string", "minLength": 1}}


def _condition_schema(**more: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {**_CONDITION, **more}, "required": ["diagnostic"],
            "oneOf": [{"required": ["above"]}, {"required": ["below"]}],
            "additionalProperties": False}


class _Conditional(AbstractSchedule):
    """A schedule on a condition: a diagnostic above (or below) a threshold, of the end-of-step
    state or of the state right after a stage; written as a mapping of ``keys``."""

    diagnostic: str
    above: float | None
    below: float | None
    stage: str | None

    @property
    def condition(self) -> Condition:
        return Condition(self.diagnostic, self.above, self.below, self.stage)

    def holds(self, value: float) -> bool:
        """The condition on a host value (the device evaluates the same comparison)."""
        return self.condition.holds(value)

    def _check(self) -> None:
        """A condition names a diagnostic, exactly one finite threshold and maybe a stage."""
        form = self.kind
        if not isinstance(self.diagnostic, str) or not self.diagnostic:
            hint = (" (YAML reads unquoted on, off, yes and no as true or false: quote such a "
                    "name)" if isinstance(self.diagnostic, bool) else "")
            raise ScenarioError(f"expected a diagnostic name, given {self.diagnostic!r}{hint}",
                                key=f"{form}.diagnostic")
        if (self.above is None) == (self.below is None):
            raise ScenarioError(f"expected exactly one of 'above' or 'below', given above="
                                f"{self.above!r}, below={self.below!r}", key=form)
        for name in ("above", "below"):
            value = getattr(self, name)
            if value is not None and not _is_number(value):
                raise ScenarioError(f"expected a finite number, given {value!r}",
                                    key=f"{form}.{name}")

    def _check_stage(self) -> None:
        if self.stage is not None and (not isinstance(self.stage, str) or not self.stage):
            raise ScenarioError(f"expected a stage name, given {self.stage!r}",
                                key=f"{self.kind}.stage")


@dataclass(frozen=True)
class WallTime(_DriverDecided):
    """Fires at the first step boundary after each ``seconds`` of wall-clock time; the driver
    sizes blocks from the measured step rate so it needs no per-step host sync."""

    kind: ClassVar[str] = "wall_time"
    form: ClassVar[str] = "wall_time: SECONDS"
    value_schema: ClassVar[dict[str, Any]] = {"type": "number", "exclusiveMinimum": 0}

    seconds: float
    #: Seconds from some fixed point; a fake clock in tests.
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _is_number(self.seconds) or self.seconds <= 0:
            raise ScenarioError(f"expected a finite number of seconds > 0, given "
                                f"{self.seconds!r}", key="wall_time")

    @property
    def wall_clock(self) -> float | None:
        return self.seconds

    def init_state(self) -> ClockState:
        return ClockState(type(self).__name__, self.seconds, self.clock)

    def may_fire(self, state: ScheduleState, step: int, time: float) -> bool:
        return state.clock_member().seconds_left() <= 0

    def to_spec(self) -> dict[str, Any]:
        if self.clock is not time.perf_counter:
            raise ValueError(f"expected a wall_time on the wall clock, given {self!r} with a "
                             "clock of its own (kept in this process only: a scenario says "
                             "wall_time: SECONDS)")
        return super().to_spec()

    def due(self, state: ScheduleState, step: int, time: float, value: ValueOf) -> bool:
        clock = state.clock_member()
        if clock.due():
            clock.fired()
            return True
        return False


@dataclass(frozen=True)
class When(_Conditional, _DriverDecided):
    """Fires at the first step where a diagnostic rises above (or falls below) a threshold.

    Edge-triggered: it fires again only after the condition has been false. ``cooldown`` steps
    after a firing are ignored. The condition is evaluated on the device inside the compiled
    loop, which stops at that step.
    """

    kind: ClassVar[str] = "when"
    form: ClassVar[str] = "when: {diagnostic: D, above|below: X [, cooldown: N]}"
    keys: ClassVar[tuple[str, ...]] = ("diagnostic", "above", "below", "cooldown", "stage")
    shape: ClassVar[str] = "{diagnostic: D, above|below: X}"
    value_schema: ClassVar[dict[str, Any]] = _condition_schema(cooldown=_INT_0)

    diagnostic: str
    above: float | None = None
    below: float | None = None
    cooldown: int = 0
    #: Take the diagnostic of the state right after this stage of each step (its probes).
    stage: str | None = None

    def __post_init__(self) -> None:
        self._check()
        if not _is_int(self.cooldown) or self.cooldown < 0:
            raise ScenarioError(f"expected an integer >= 0, given {self.cooldown!r}",
                                key="when.cooldown")
        self._check_stage()

    @property
    def edge(self) -> Condition | None:
        return self.condition

    # The edge memory (was the condition true at the step before?) is the condition on the state
    # the run stands at: the loop evaluates it from the state itself, so a run resumed from a
    # checkpointed state sees the same edges. A condition on a stage's state cannot be taken
    # from the end-of-step state: its memory (``held``) is kept in the state with the cooldown,
    # which is history too.
    def init_state(self) -> EdgeState:
        return EdgeState(type(self).__name__, self.cooldown, self.stage is not None)

    def may_fire(self, state: ScheduleState, step: int, time: float) -> bool:
        return True  # its condition decides

    def due(self, state: ScheduleState, step: int, time: float, value: ValueOf) -> bool:
        edge = state.edge_member()
        holds = self.holds(value(self.condition))
        before, edge.previous = edge.previous, holds
        # Edge-triggered: the state a run starts from never fires.
        if holds and before is False and edge.may_fire(step):
            edge.fired(step)
            return True
        return False


@dataclass(frozen=True)
class While(_Conditional):
    """Level-triggered: fires at steps ``every, 2 * every, ...`` (and the initial state) at which a
    diagnostic is above (or below) a threshold, evaluated on the device inside the block.

    The step numbers are the candidates; the condition decides on the device which of them are
    captured, so a run captures every step (thinned by ``every``) *while* the condition holds.
    With ``stage``, the diagnostic is evaluated on the state right after that stage of the
    step (where the stage's probes are), not on the end-of-step state; the initial state, which
    no stage has made, never holds.
    """

    kind: ClassVar[str] = "while"
    form: ClassVar[str] = "while: {diagnostic: D, above|below: X [, every: N]}"
    alone: ClassVar[bool] = True
    keys: ClassVar[tuple[str, ...]] = ("diagnostic", "above", "below", "every", "stage")
    shape: ClassVar[str] = "{diagnostic: D, above|below: X [, every: N, stage: S]}"
    defaults: ClassVar[dict[str, Any]] = {"every": 1}
    value_schema: ClassVar[dict[str, Any]] = _condition_schema(every=_INT_1)

    diagnostic: str = ""  # checked by _check, so a missing one is said as an empty name
    above: float | None = None
    below: float | None = None
    every: int = 1
    stage: str | None = None

    def __post_init__(self) -> None:
        Every(self.every)  # its steps are an ``every``'s, checked as such
        self._check()
        self._check_stage()

    @cached_property
    def candidates(self) -> Every:
        """The steps at which the condition is asked."""
        return Every(self.every)

    def next_step(self, after: int) -> int | None:
        return self.candidates.next_step(after)

    def next_time(self, after: float) -> float | None:
        return None

    def fires(self, step: int, time: float) -> bool:
        return self.candidates.fires(step, time)

    @property
    def at_end(self) -> bool:
        return False

    @property
    def every_step(self) -> bool:
        return self.every == 1

    @property
    def level(self) -> Condition | None:
        return self.condition

    def step_count(self, steps: int) -> int:
        return self.candidates.step_count(steps)

    def due(self, state: ScheduleState, step: int, time: float, value: ValueOf) -> bool:
        return self.fires(step, time) and self.holds(value(self.condition))
