"""What a schedule remembers during one run: cooldowns, edge memory, wall-clock deadlines.

A schedule is configuration only (frozen, equal by value); each run holds the states of its
schedules, so a checkpoint can save them and a resumed run capture exactly what an uninterrupted
one would. Saved states are flat mappings of names to numbers, the same names whatever the
values, so every checkpoint stores them the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

_S = TypeVar("_S", bound="ScheduleState")


def check_names(owner: str, expected: Sequence[str], state: Mapping[str, float]) -> None:
    """Refuse a saved state whose names are not ``expected``."""
    want, given = sorted(expected), sorted(state)
    if want != given:
        raise ValueError(f"{owner}.restore: expected the saved state {want}, given {given}")


class ScheduleState:
    """The state of a schedule that remembers nothing (steps, simulated times, conditions whose
    memory is the run's state itself)."""

    def __init__(self, owner: str = "AbstractSchedule") -> None:
        #: The schedule's kind, as said in errors.
        self.owner = owner

    def save(self) -> dict[str, float]:
        """The state now: a flat mapping of names to numbers (JSON-serialisable)."""
        return {}

    def restore(self, saved: Mapping[str, float]) -> None:
        """Take back a state from ``save`` (of a schedule equal to this one's).

        Raises:
            ValueError: ``saved`` does not hold exactly the names ``save`` gives.
        """
        check_names(self.owner, list(self.save()), saved)

    def reset(self) -> None:
        """Forget what happened: the state at the start of a run."""

    def member(self, i: int) -> ScheduleState:
        """A union member's state (the state itself for a schedule that is not a union)."""
        if i != 0:
            raise IndexError(f"{self.owner}: a single schedule has member 0 only, given {i}")
        return self

    def edge_member(self, i: int = 0) -> EdgeState:
        """Member ``i``'s state as an edge condition's (``when``).

        Raises:
            TypeError: that member is not an edge condition.
        """
        return self._member_as(i, EdgeState, "when")

    def clock_member(self, i: int = 0) -> ClockState:
        """Member ``i``'s state as a wall clock's (``wall_time``).

        Raises:
            TypeError: that member is not a wall clock.
        """
        return self._member_as(i, ClockState, "wall_time")

    def _member_as(self, i: int, kind: type[_S], key: str) -> _S:
        state = self.member(i)
        if not isinstance(state, kind):
            raise TypeError(f"expected the state of a {key!r} schedule, given {state!r}")
        return state


class EdgeState(ScheduleState):
    """An edge-triggered condition's memory: its cooldown, and for a condition on a stage's
    state whether it held at the last step taken (the end-of-step state cannot say)."""

    def __init__(self, owner: str, cooldown: int, staged: bool) -> None:
        super().__init__(owner)
        self.cooldown = cooldown
        self._saved: dict[str, int] = {"cooldown_until": 0}
        if staged:
            self._saved["held"] = 0
        #: Whether the condition held at the last step evaluated on the host (None: none yet).
        self.previous: bool | None = None

    @property
    def held(self) -> bool:
        """Whether a condition on a stage held at the last step taken (False for others)."""
        return bool(self._saved.get("held", 0))

    def hold(self, value: bool) -> None:
        """Record whether a condition on a stage held at the last step taken."""
        if "held" in self._saved:
            self._saved["held"] = int(bool(value))

    @property
    def resumes_at(self) -> int:
        """The first step at which the condition may fire again (0 before any firing)."""
        return self._saved["cooldown_until"]

    def may_fire(self, step: int) -> bool:
        """Whether a rising edge at ``step`` fires (its cooldown has passed)."""
        return step >= self._saved["cooldown_until"]

    def fired(self, step: int) -> None:
        """Record a firing at ``step``: the next ``cooldown`` steps are ignored."""
        self._saved["cooldown_until"] = step + self.cooldown + 1

    def save(self) -> dict[str, float]:
        return dict(self._saved)

    def restore(self, saved: Mapping[str, float]) -> None:
        check_names(self.owner, list(self._saved), saved)
        self._saved.update({name: int(value) for name, value in saved.items()})

    def reset(self) -> None:
        self._saved.update({name: 0 for name in self._saved})
        self.previous = None


class ClockState(ScheduleState):
    """A wall-clock schedule's deadline: the clock reading at which it fires next. Saved as the
    seconds left, so a resumed run's first capture comes as long after the checkpoint as it
    would have. The clock starts at its first reading, or at ``restart``."""

    def __init__(self, owner: str, seconds: float, clock: Callable[[], float]) -> None:
        super().__init__(owner)
        self.seconds = seconds
        self.clock = clock
        self.deadline: float | None = None

    def seconds_left(self) -> float:
        """Wall-clock seconds until it fires next (negative once overdue; the whole interval
        before the clock has started). Reads the clock only."""
        if self.deadline is None:
            return self.seconds
        return self.deadline - self.clock()

    def due(self) -> bool:
        """Whether the interval since the start (or the last firing) has passed; the first
        reading of a clock not started yet starts it."""
        if self.deadline is None:
            self.restart()
            return self.seconds <= 0
        return self.seconds_left() <= 0

    def fired(self) -> None:
        """Record a firing now: the next one comes ``seconds`` later."""
        self.deadline = self.clock() + self.seconds

    def restart(self) -> None:
        """Start the interval now (the start of a run)."""
        self.deadline = self.clock() + self.seconds

    def save(self) -> dict[str, float]:
        return {"seconds_left": max(0.0, self.seconds_left())}

    def restore(self, saved: Mapping[str, float]) -> None:
        check_names(self.owner, ["seconds_left"], saved)
        self.deadline = self.clock() + float(saved["seconds_left"])

    def reset(self) -> None:
        self.restart()


class UnionState(ScheduleState):
    """A union's state: its members' states, saved under their place in the union (``1.name``)."""

    def __init__(self, owner: str, members: Sequence[ScheduleState]) -> None:
        super().__init__(owner)
        self.members = tuple(members)

    def member(self, i: int) -> ScheduleState:
        return self.members[i]

    def save(self) -> dict[str, float]:
        return {f"{i}.{name}": value for i, m in enumerate(self.members)
                for name, value in m.save().items()}

    def restore(self, saved: Mapping[str, float]) -> None:
        check_names(self.owner, list(self.save()), saved)
        for i, m in enumerate(self.members):
            prefix = f"{i}."
            m.restore({name.removeprefix(prefix): value for name, value in saved.items()
                       if name.startswith(prefix)})

    def reset(self) -> None:
        for m in self.members:
            m.reset()
