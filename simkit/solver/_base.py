"""What a solver declares: parameters, fields, grid, initial state, stages, diagnostics, time step.

Stage code is written once against the Array API, so one solver runs on every backend.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from simkit._types import Array, StageFn, State, StepFn


class SolverModel(BaseModel):
    """Base of a solver's parameter and initial-condition models: strict, no unknown keys, no NaN."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


@dataclass(frozen=True)
class FieldSpec:
    """A prognostic field: its name, dimensions, CF units and long name."""

    name: str
    dims: tuple[str, ...]
    units: str
    long_name: str


@dataclass(frozen=True)
class Coordinate:
    """A grid coordinate: host values along one dimension, with CF units and long name."""

    name: str
    values: np.ndarray
    units: str
    long_name: str


@dataclass(frozen=True)
class Stage:
    """A named sub-step, a pure function ``(state, dt) -> state``.

    A stage may add intermediate arrays to the state (e.g. a Laplacian) for later stages of the
    same step; only the prognostic fields are carried to the next step. Intermediates declared as
    ``probes`` can be captured by a stream that names this stage.
    """

    name: str
    fn: StageFn
    probes: tuple[FieldSpec, ...] = ()


@dataclass(frozen=True)
class Diagnostic:
    """A cheap scalar reduction of the state, e.g. energy."""

    name: str
    fn: Callable[[State], Array]
    units: str
    long_name: str


class AbstractSolver(abc.ABC):
    """A staged, backend-neutral solver.

    A concrete solver sets ``name``, ``version``, ``description``, ``Params`` and ``Initial``,
    takes its validated ``Params`` in ``__init__`` and implements the methods below.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[SolverModel]]
    Initial: ClassVar[type[SolverModel]]
    time_units: ClassVar[str]

    @abc.abstractmethod
    def fields(self) -> Sequence[FieldSpec]:
        """The prognostic fields, in a fixed order."""

    @abc.abstractmethod
    def coordinates(self) -> Sequence[Coordinate]:
        """The grid coordinates of the fields' dimensions."""

    @abc.abstractmethod
    def initial_state(self, initial: SolverModel, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The initial fields as float64 host arrays, drawn from ``rng`` where random."""

    @abc.abstractmethod
    def stages(self) -> Sequence[Stage]:
        """The ordered stages of one step."""

    @abc.abstractmethod
    def diagnostics(self) -> Sequence[Diagnostic]:
        """The diagnostics a stream may record."""

    @abc.abstractmethod
    def default_dt(self) -> float:
        """A stable time step for these parameters."""

    @abc.abstractmethod
    def max_stable_dt(self) -> float | None:
        """The largest stable time step, or None when any positive step is stable."""


#: Keys every stage finds in the state besides the fields: the index of the step being taken,
#: the simulated time at its start and the run's seed (for counter-based random numbers).
STEP_KEY, TIME_KEY, SEED_KEY = "step", "time", "seed"


def make_step(solver: AbstractSolver, seed: int = 0, *, until_stage: str | None = None
              ) -> StepFn:
    """One step of ``solver``: all its stages in order, returning only the prognostic fields.

    Args:
        solver: the solver.
        seed: the run's seed, found by stages under ``state["seed"]``.
        until_stage: when given, the step also returns, second, the whole state right after that
            stage (fields and the stage's probes), for stage-level captures.
    """
    stages = tuple(solver.stages())
    names = tuple(f.name for f in solver.fields())
    if until_stage is not None and until_stage not in [s.name for s in stages]:
        raise ValueError(f"until_stage: expected one of {[s.name for s in stages]}, "
                         f"given {until_stage!r}")

    def step(fields: State, dt: Any, index: Any, time: Any) -> Any:
        state: Mapping[str, Array] = {**fields, STEP_KEY: index, TIME_KEY: time, SEED_KEY: seed}
        seen = None
        for stage in stages:
            state = stage.fn(state, dt)
            if stage.name == until_stage:
                seen = {k: v for k, v in state.items() if k not in (STEP_KEY, TIME_KEY, SEED_KEY)}
        out = {name: state[name] for name in names}
        return out if until_stage is None else (out, seen)

    step.__name__ = f"{solver.name}_step"
    return step
