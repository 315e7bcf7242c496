"""The schedule protocol: which steps (or simulated times) a stream captures at.

Pure Python, no arrays: the driver asks for the next firing step or time and advances the compiled
loop exactly that far.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Relative tolerance used to decide that a simulated time has landed on a target time.
TIME_RTOL = 1e-9


class AbstractSchedule(abc.ABC):
    """Decides at which steps a stream captures.

    Step 0 is the initial state; step ``n`` is the state after ``n`` steps.
    """

    @abc.abstractmethod
    def next_step(self, after: int) -> int | None:
        """The first step greater than ``after`` that fires by step count, or None."""

    @abc.abstractmethod
    def next_time(self, after: float) -> float | None:
        """The first simulated time greater than ``after`` the run must land on, or None."""

    @abc.abstractmethod
    def fires(self, step: int, time: float) -> bool:
        """Whether the state at ``step`` (simulated ``time``) is captured."""

    @property
    @abc.abstractmethod
    def at_end(self) -> bool:
        """Whether the final state of the run is captured, wherever the run ends."""

    def __or__(self, other: AbstractSchedule) -> AnyOf:
        return AnyOf((self, other))

    # A schedule owns what it remembers between steps (a cooldown, a wall-clock deadline), so a
    # checkpoint can hold it and a resumed run capture exactly what an uninterrupted one would.
    # Stateless schedules remember nothing; the stateful kinds override these three.

    def save(self) -> dict[str, float]:
        """The schedule's state now: a flat mapping of names to numbers (JSON-serialisable),
        with the same names whatever the values, so every checkpoint stores it the same way."""
        return {}

    def restore(self, state: Mapping[str, float]) -> None:
        """Take back a state from ``save`` (of a schedule equal to this one).

        Raises:
            ValueError: ``state`` does not hold exactly the names ``save`` gives.
        """
        check_state_names(self, state)

    def reset(self) -> None:  # noqa: B027 - stateless schedules have nothing to forget
        """Forget what happened: the state at the start of a run."""


@dataclass(frozen=True)
class AnyOf(AbstractSchedule):
    """Fires whenever any of its members fires."""

    members: tuple[AbstractSchedule, ...]

    def __post_init__(self) -> None:
        flat: list[AbstractSchedule] = []
        for member in self.members:
            if not isinstance(member, AbstractSchedule):
                raise TypeError(f"AnyOf: expected schedules, given {member!r}")
            flat.extend(member.members if isinstance(member, AnyOf) else (member,))
        if not flat:
            raise ValueError("AnyOf: expected at least one schedule, given none")
        object.__setattr__(self, "members", tuple(flat))

    def next_step(self, after: int) -> int | None:
        return _min_or_none(m.next_step(after) for m in self.members)

    def next_time(self, after: float) -> float | None:
        return _min_or_none(m.next_time(after) for m in self.members)

    def fires(self, step: int, time: float) -> bool:
        return any(m.fires(step, time) for m in self.members)

    @property
    def at_end(self) -> bool:
        return any(m.at_end for m in self.members)

    def save(self) -> dict[str, float]:
        # Each member's names, prefixed by its place in the union.
        return {f"{i}.{name}": value for i, m in enumerate(self.members)
                for name, value in m.save().items()}

    def restore(self, state: Mapping[str, float]) -> None:
        check_state_names(self, state)
        for i, m in enumerate(self.members):
            prefix = f"{i}."
            m.restore({name.removeprefix(prefix): value for name, value in state.items()
                       if name.startswith(prefix)})

    def reset(self) -> None:
        for m in self.members:
            m.reset()


def _min_or_none(values: Any) -> Any:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def check_state_names(schedule: AbstractSchedule, state: Mapping[str, float]) -> None:
    """Refuse a saved state whose names are not those ``schedule.save()`` gives."""
    expected, given = sorted(schedule.save()), sorted(state)
    if expected != given:
        raise ValueError(f"{type(schedule).__name__}.restore: expected the saved state "
                         f"{expected}, given {given}")


def members(schedule: AbstractSchedule) -> tuple[AbstractSchedule, ...]:
    """The schedules a union is made of (or the schedule itself)."""
    return schedule.members if isinstance(schedule, AnyOf) else (schedule,)
