"""The schedule protocol: which steps (or simulated times) a stream captures at.

Pure Python, no arrays: the driver asks for the next firing step or time and advances the compiled
loop exactly that far. A schedule is configuration only (frozen, hashable, equal by value); what
it remembers during a run lives in the ``ScheduleState`` from ``init_state``.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from simkit.errors import ScenarioError, did_you_mean
from simkit.schedule._state import ScheduleState, UnionState

_T = TypeVar("_T", int, float)

#: Relative tolerance used to decide that a simulated time has landed on a target time.
TIME_RTOL = 1e-9


@dataclass(frozen=True)
class Condition:
    """What a ``when``, ``while`` or ``stop_when`` looks at: a diagnostic above (or below) a
    threshold, of the end-of-step state or of the state right after ``stage``."""

    diagnostic: str
    above: float | None = None
    below: float | None = None
    stage: str | None = None

    def holds(self, value: float) -> bool:
        """The condition on a host value (the device evaluates the same comparison)."""
        if self.above is not None:
            return value > self.above
        return self.below is not None and value < self.below

    @property
    def key(self) -> tuple[str, float | None, float | None, str | None]:
        """What compiled code is keyed on."""
        return (self.diagnostic, self.above, self.below, self.stage)


#: How a schedule reads a condition's diagnostic on the host.
ValueOf = Callable[[Condition], float]


class AbstractSchedule(abc.ABC):
    """Decides at which steps a stream captures.

    Step 0 is the initial state; step ``n`` is the state after ``n`` steps.
    """

    #: Its scenario key ("every", "at", "when", ..., "any").
    kind: ClassVar[str] = ""
    #: Its form in the scenario, as error messages list it; a kind with a form is registered
    #: (``KINDS``) under its key when its class is defined.
    form: ClassVar[str] = ""
    #: Keys beside its own that it reads from the same mapping, with their JSON schemas
    #: (``every``'s ``offset``).
    modifiers: ClassVar[dict[str, dict[str, Any]]] = {}
    #: The JSON schema of its value.
    value_schema: ClassVar[dict[str, Any]] = {}
    #: Whether it must be alone in its stream (a level condition gates every capture).
    alone: ClassVar[bool] = False
    #: For a kind written as a mapping: its keys, its shape as said in errors and the defaults
    #: of its keys (``from_mapping``).
    keys: ClassVar[tuple[str, ...]] = ()
    shape: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind") and cls.__dict__.get("form"):
            KINDS[cls.kind] = cls

    @classmethod
    def from_spec(cls, value: Any, spec: Mapping[str, Any], key: str
                  ) -> list[AbstractSchedule]:
        """The schedules its key's ``value`` makes (``spec``: the mapping it came from, for its
        modifiers; ``key``: the key path of ``value``); none for a flag set to false.

        Raises:
            ScenarioError: naming the key, what was expected and what was given.
        """
        if cls.keys:
            return [cls.from_mapping(value, key)]
        factory: Callable[..., AbstractSchedule] = cls
        return [factory(value)]

    @classmethod
    def from_mapping(cls, value: Any, key: str) -> AbstractSchedule:
        """The schedule from its mapping ``value`` (of ``keys``) at ``key``, every error said
        of the key inside it that is wrong (``outputs.hot.while.every``, ``stop_when.cooldown``).

        Raises:
            ScenarioError: for a value that is not a mapping, an unknown key or a bad value.
        """
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ScenarioError(f"expected {cls.shape}, given {value!r}", key=key)
        for item in value:
            if item not in cls.keys:
                raise ScenarioError(f"unknown key{did_you_mean(str(item), cls.keys)}; expected "
                                    f"one of {', '.join(cls.keys)}, given {item!r}",
                                    key=f"{key}.{item}")
        given = {**cls.defaults, **value}
        missing = [name for name, p in inspect.signature(cls).parameters.items()
                   if p.default is p.empty and name not in given]
        if missing:
            raise ScenarioError(f"expected {cls.shape} (without {', '.join(missing)}), given "
                                f"{value!r}", key=key)
        factory: Callable[..., AbstractSchedule] = cls
        try:
            return factory(**given)
        except ScenarioError as error:
            inner = str(error.key or "")
            if inner == cls.kind or inner.startswith(cls.kind + "."):  # the schedule names itself
                inner = inner.removeprefix(cls.kind).lstrip(".")
            raise ScenarioError(error.message, key=f"{key}.{inner}" if inner else key) from None

    @abc.abstractmethod
    def next_step(self, after: int) -> int | None:
        """The first step greater than ``after`` that fires by step count, or None."""

    @abc.abstractmethod
    def next_time(self, after: float) -> float | None:
        """The first simulated time greater than ``after`` the run must land on, or None."""

    @abc.abstractmethod
    def fires(self, step: int, time: float) -> bool:
        """Whether the state at ``step`` (simulated ``time``) is captured, by step count and
        simulated time alone."""

    @property
    @abc.abstractmethod
    def at_end(self) -> bool:
        """Whether the final state of the run is captured, wherever the run ends."""

    # ------------------------------------------------------------------ what it is

    @property
    def known_in_advance(self) -> bool:
        """Whether it fires at steps known before the run (every, at, logspace, first)."""
        return False

    @property
    def every_step(self) -> bool:
        """Whether it fires at every step (``every: 1``)."""
        return False

    @property
    def edge(self) -> Condition | None:
        """An edge-triggered condition (``when``): it fires where the condition turns true."""
        return None

    @property
    def level(self) -> Condition | None:
        """A level-triggered condition (``while``): it gates ``fires``."""
        return None

    @property
    def wall_clock(self) -> float | None:
        """The seconds of a wall-clock schedule, else None."""
        return None

    @property
    def listed_steps(self) -> tuple[int, ...]:
        """The steps it lists explicitly (at, logspace), else none."""
        return ()

    @property
    def steps_known(self) -> bool:
        """Whether every member fires at steps a run knows before it starts: steps known in
        advance, or only the run's last (``last``); not at conditions, clocks or simulated
        times."""
        return all(m.known_in_advance or m.at_end for m in self.members())

    def members(self) -> tuple[AbstractSchedule, ...]:
        """The schedules a union is made of (the schedule itself for others)."""
        return (self,)

    def fires_at(self, step: int, time: float, final: bool) -> bool:
        """Whether the state at ``step`` is captured by step count and simulated time, or as
        the run's final state (``final``) by a schedule that captures it wherever it ends."""
        return self.fires(step, time) or (final and self.at_end)

    def to_spec(self) -> dict[str, Any]:
        """Its keys in a stream mapping (``{"every": 10, "offset": 5}``), as a scenario file
        says it; a union's are its members' (``any`` when two share a key)."""
        if not self.kind:
            raise TypeError(f"expected a schedule a scenario can say, given {self!r}")
        fields = [f for f in dataclasses.fields(self)  # type: ignore[arg-type]
                  if f.init and f.compare]
        if self.keys:  # in the order of its keys, as a file says them
            named = {f.name: f for f in fields}
            return {self.kind: {name: getattr(self, name) for name in self.keys
                                if name in named and _given(self, named[name])}}
        own = [f for f in fields if f.name not in self.modifiers]
        value: Any = True
        if len(own) == 1:
            value = getattr(self, own[0].name)
        elif own:
            value = {f.name: getattr(self, f.name) for f in own}
        return {self.kind: value, **{f.name: getattr(self, f.name) for f in fields
                                     if f.name in self.modifiers and _given(self, f)}}

    # ------------------------------------------------------------------ how many, where

    def step_count(self, steps: int) -> int:
        """Captures by step count within ``steps`` steps, in closed form (0: not by steps)."""
        return 0

    def time_count(self, end_time: float) -> int:
        """Captures by simulated time up to ``end_time`` (0: not by time)."""
        return 0

    def count(self, steps: int, end_time: float) -> int:
        """An upper bound on the captures of a run of ``steps`` steps ending at ``end_time``
        (a union counts each step once at most, an upper bound where its members overlap)."""
        parts = self.members()
        by_step = sum(m.step_count(steps) for m in parts)
        by_time = sum(m.time_count(end_time) for m in parts)
        return min(by_step, steps + 1) + by_time + int(self.at_end)

    def beyond(self, steps: int) -> tuple[int, ...]:
        """The explicitly listed steps after the end of a run of ``steps`` steps."""
        return tuple(sorted({s for m in self.members() for s in m.listed_steps if s > steps}))

    # ------------------------------------------------------------------ per run

    def init_state(self) -> ScheduleState:
        """The state a run starts from (a fresh object)."""
        return ScheduleState(type(self).__name__)

    def due(self, state: ScheduleState, step: int, time: float, value: ValueOf) -> bool:
        """Whether the state at ``step`` is captured, updating ``state``; ``value(condition)``
        gives a condition's diagnostic on the host (called for conditions only)."""
        return self.fires(step, time)

    def may_fire(self, state: ScheduleState, step: int, time: float) -> bool:
        """Whether the state at ``step`` could be due, without reading any value or changing
        ``state``: a condition counts at each of its candidate steps."""
        return self.fires(step, time)

    def __or__(self, other: AbstractSchedule) -> AnyOf:
        return AnyOf((self, other))


#: The schedule kinds by scenario key, in the order they were defined.
KINDS: dict[str, type[AbstractSchedule]] = {}

class Members(tuple[AbstractSchedule, ...]):
    """A union's members: a tuple that answers ``members()`` too, as every schedule does."""

    __slots__ = ()

    def __call__(self) -> tuple[AbstractSchedule, ...]:
        return self


@dataclass(frozen=True)
class AnyOf(AbstractSchedule):
    """Fires whenever any of its members fires (a capture is taken once at a step where
    several fire).

    In a scenario, several schedule keys in one stream make a union (``{every: 100, at:
    [3]}``), as does ``any: [{every: 100}, {at: [3]}]``; from Python, ``AnyOf((Every(100),
    At((3,))))``.
    """

    kind: ClassVar[str] = "any"

    members: tuple[AbstractSchedule, ...]  # type: ignore[assignment]

    def __post_init__(self) -> None:
        flat: list[AbstractSchedule] = []
        for member in self.members:
            if not isinstance(member, AbstractSchedule):
                raise TypeError(f"AnyOf: expected schedules, given {member!r}")
            flat.extend(member.members if isinstance(member, AnyOf) else (member,))
        if not flat:
            raise ValueError("AnyOf: expected at least one schedule, given none")
        object.__setattr__(self, "members", Members(flat))

    def next_step(self, after: int) -> int | None:
        return _min_or_none(m.next_step(after) for m in self.members)

    def next_time(self, after: float) -> float | None:
        return _min_or_none(m.next_time(after) for m in self.members)

    def fires(self, step: int, time: float) -> bool:
        return any(m.fires(step, time) for m in self.members)

    @property
    def at_end(self) -> bool:
        return any(m.at_end for m in self.members)

    @property
    def known_in_advance(self) -> bool:
        return all(m.known_in_advance for m in self.members)

    @property
    def every_step(self) -> bool:
        return any(m.every_step for m in self.members)

    def init_state(self) -> ScheduleState:
        return UnionState(type(self).__name__, [m.init_state() for m in self.members])

    def may_fire(self, state: ScheduleState, step: int, time: float) -> bool:
        return any(m.may_fire(state.member(i), step, time) for i, m in enumerate(self.members))

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        parts = [m.to_spec() for m in self.members]
        for part in parts:
            if spec.keys() & part.keys():
                return {"any": parts}
            spec.update(part)
        return spec

    def due(self, state: ScheduleState, step: int, time: float, value: ValueOf) -> bool:
        # Every member is asked: each keeps its own memory up to date.
        answers = [m.due(state.member(i), step, time, value) for i, m in enumerate(self.members)]
        return any(answers)


def _min_or_none(values: Iterable[_T | None]) -> _T | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None  # type: ignore[type-var]


def _given(schedule: AbstractSchedule, item: dataclasses.Field[Any]) -> bool:
    """Whether ``item`` of ``schedule`` differs from its default (a required one always does)."""
    return (item.default is dataclasses.MISSING
            or bool(getattr(schedule, item.name) != item.default))
