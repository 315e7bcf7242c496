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
    same step; only the prognostic fields are carried to the next step.
    """

    name: str
    fn: StageFn


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


def make_step(solver: AbstractSolver) -> StepFn:
    """One step of ``solver``: all its stages in order, returning only the prognostic fields."""
    stages = tuple(solver.stages())
    names = tuple(f.name for f in solver.fields())

    def step(fields: State, dt: Any) -> dict[str, Array]:
        state: Mapping[str, Array] = fields
        for stage in stages:
            state = stage.fn(state, dt)
        return {name: state[name] for name in names}

    step.__name__ = f"{solver.name}_step"
    return step
