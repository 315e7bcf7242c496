"""What a solver declares: parameters, fields, grid, initial state, stages, diagnostics, time step.

Stage code is written once against the Array API, so one solver runs on every backend.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from array_api_compat import (
    array_namespace,
    is_array_api_obj,
    is_jax_array,
    is_numpy_array,
    is_torch_array,
)
from pydantic import BaseModel, ConfigDict

from simkit._types import Array, StageFn, State, StepFn

#: Array libraries a stage may carry a kernel for, as ``Stage.kernels`` keys.
KERNEL_BACKENDS = ("numpy", "jax", "torch")
#: Set to 0 to run every stage by its Array API ``fn`` (e.g. to rule out a kernel as a cause).
KERNELS_ENV = "SIMKIT_KERNELS"


class SolverModel(BaseModel):
    """Base of a solver's parameter and initial-condition models: strict, no unknown keys, no NaN.

    A solver declares ``Params`` and ``Initial`` as subclasses with typed, defaulted fields
    (pydantic); a scenario's ``params`` and ``initial`` are validated against them before
    anything runs, each error naming the key, and ``simkit schema`` lists them. Models are
    frozen, and strict: ``1`` is not accepted for a ``str`` nor ``"1"`` for an ``int``.

    Example:
        ``class Params(SolverModel): rate: float = Field(1.0, gt=0, description="decay rate")``
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


@dataclass(frozen=True)
class FieldSpec:
    """A prognostic field: its name, dimensions, CF units and long name.

    A solver's ``fields()`` returns one per array of its state that steps carry forward. Files
    store the field as a variable of these dimensions (a stream adds ``step`` in front) with
    ``units`` and ``long_name`` as CF attributes.

    Args:
        name: the field's key in the state, and its variable name in files.
        dims: its dimension names, each a ``Coordinate`` of the solver, e.g. ``("y", "x")``.
        units: CF units (UDUNITS syntax), e.g. ``"K"``, ``"m s-1"``; ``"1"`` if dimensionless.
        long_name: a readable description, shown in plots and ``simkit inspect``.

    Example:
        ``FieldSpec("u", ("y", "x"), "K", "temperature")``
    """

    name: str
    dims: tuple[str, ...]
    units: str
    long_name: str


@dataclass(frozen=True)
class Coordinate:
    """A grid coordinate: host values along one dimension, with CF units and long name.

    A solver's ``coordinates()`` returns one per dimension its fields and vector diagnostics
    name; files store it as a coordinate variable of that dimension.

    Args:
        name: the dimension's name, as ``FieldSpec.dims`` and ``Diagnostic.dims`` say it.
        values: a one-dimensional NumPy array (host values, whatever the backend): cell
            centres, wave numbers, histogram bins.
        units: CF units, e.g. ``"m"``; ``"1"`` for indices.
        long_name: a readable description, e.g. ``"x position"``.

    Example:
        ``Coordinate("x", np.arange(64) * dx, "m", "x position")``
    """

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

    ``fn``, written against the Array API, is the specification. ``kernels`` may add faster forms
    of the same function for one array library each (keys ``numpy``, ``jax``, ``torch``); a step
    uses the kernel of its state's library when there is one, and ``tests/test_kernels.py`` holds
    every kernel to ``fn`` within rounding. A kernel keeps the contract: it returns a new state
    and never writes into the arrays of the one it is given (a NumPy kernel reuses only scratch
    arrays of its own that no one else holds, see ``ScratchPool``).
    """

    name: str
    fn: StageFn
    probes: tuple[FieldSpec, ...] = ()
    kernels: Mapping[str, StageFn] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kernels) - set(KERNEL_BACKENDS))
        if unknown:
            raise ValueError(f"Stage {self.name!r} kernels: expected keys among "
                             f"{', '.join(KERNEL_BACKENDS)}, given {unknown[0]!r}")
        # A copy of its own: the caller's later edits must not reach a step already built.
        object.__setattr__(self, "kernels", dict(self.kernels))


@dataclass(frozen=True)
class Diagnostic:
    """A cheap reduction of the state, e.g. energy: a scalar, or a short vector (a histogram, a
    spectrum) whose ``dims`` name grid coordinates of the solver, as a field's do.

    A stream stores it as ``(step, *dims)``; a value of any other shape stops the run.
    """

    name: str
    fn: Callable[[State], Array]
    units: str
    long_name: str
    dims: tuple[str, ...] = ()


@dataclass(frozen=True)
class Carry:
    """Intermediates that a step's stages leave for the next step's ("first same as last"),
    e.g. the accelerations at the end of a kick-drift-kick step, which the next step's first
    kick would compute again from the same positions.

    They are not fields: files, checkpoints and captures never hold them. A loop that takes many
    steps (a block) passes them from step to step: it gives the step ``prime``'s state once,
    ``names`` computed from the fields, then each step returns them beside the fields for the
    next. A stage that reads one takes it from the state where it is there and computes it where
    it is not (a single step, a replay, a gradient), by the same function as ``prime`` (its
    ``fn``, or its kernel for the state's library), so both give the same numbers to the bit.

    Args:
        names: the intermediates carried, each set by a stage of every step.
        prime: a stage that adds them to a state that holds only the fields.
    """

    names: tuple[str, ...]
    prime: Stage


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
    #: Names of the continuous parameters a run may be differentiated with respect to (see
    #: ``simkit.autodiff``); empty for a solver that is not differentiable (discrete, stochastic).
    differentiable: ClassVar[tuple[str, ...]] = ()
    #: Dimensions a run may split over devices (``mesh:`` / ``devices:`` in a scenario), in order
    #: of preference; None: every dimension of the fields (the compiler inserts the exchanges a
    #: stage needs, however it is written).
    split_dims: ClassVar[tuple[str, ...] | None] = None

    @abc.abstractmethod
    def fields(self) -> Sequence[FieldSpec]:
        """The prognostic fields, in a fixed order."""

    @abc.abstractmethod
    def coordinates(self) -> Sequence[Coordinate]:
        """The grid coordinates of the fields' dimensions."""

    @abc.abstractmethod
    def initial_state(self, initial: SolverModel, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The initial fields as float64 host arrays, drawn from ``rng`` where random."""

    def initial_params(self, initial: SolverModel) -> tuple[str, ...]:
        """The differentiable parameters that the initial state of ``initial`` depends on
        (e.g. velocities built from a gravitational constant); ``initial_at`` gives how.

        A gradient with respect to such a parameter goes through the initial state too: it is
        the derivative of the run's own value. A gradient with respect to a parameter that
        changes the initial state without being declared here is refused. Default: none."""
        return ()

    def initial_at(self, initial: SolverModel, state: Mapping[str, Array],
                   values: Mapping[str, Array]) -> dict[str, Array]:
        """The initial state of ``initial`` at the parameter ``values`` (0-d arrays, traced or
        tracked, for the names of ``initial_params(initial)``), from ``state``, the state that
        ``initial_state`` built at this solver's own values, on the run's array library:
        Array API code, differentiable, giving ``state`` itself at this solver's values.
        Default: ``state`` unchanged."""
        return dict(state)

    @abc.abstractmethod
    def stages(self) -> Sequence[Stage]:
        """The ordered stages of one step."""

    def step_kernels(self) -> Mapping[str, StageFn]:
        """Whole steps in one function, per array library (keys as ``Stage.kernels``): a step
        whose stages' states nobody reads (no stream or condition on a stage) runs this instead
        of the stages, e.g. one fused loop where the stages would make and read intermediates.
        Same contract as a stage (``(state, dt) -> state``, the arrays it is given never
        written); the stages' ``fn`` in order are its specification, held to it by
        ``tests/test_kernels.py``. Used only where the class that defines this method also
        defines ``stages``: a subclass that changes the stages does not inherit it. Default:
        none."""
        return {}

    def carry(self) -> Carry | None:
        """What a step leaves for the next one (see ``Carry``); None (the default): nothing."""
        return None

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


def make_step(solver: AbstractSolver, seed: int = 0, *, capture_after: Sequence[str] = (),
              kernels: bool | None = None) -> StepFn:
    """One step of ``solver``: all its stages in order, returning only the prognostic fields.

    Args:
        solver: the solver.
        seed: the run's seed, found by stages under ``state["seed"]``.
        capture_after: stage names; when given, the step also returns, second, a mapping from
            each of them to the whole state right after that stage (fields and the stage's
            probes), for stage-level captures. Those arrays are copies taken then: later stages
            may update their inputs in place.
        kernels: use the stages' kernels for the state's array library (see ``Stage``); False
            runs every stage by its ``fn``. Default: True unless the environment variable
            ``SIMKIT_KERNELS`` is ``0``.

    For a solver with a ``carry()``, the step has a ``prime`` attribute, ``(fields, dt, step,
    time) -> fields`` with the carried intermediates added; a step given them returns them
    beside the fields (a step given only the fields returns only the fields).
    """
    stages = tuple(solver.stages())
    names = tuple(f.name for f in solver.fields())
    stage_names = [s.name for s in stages]
    unknown = [name for name in capture_after if name not in stage_names]
    if unknown:
        raise ValueError(f"capture_after: expected some of {stage_names}, given {unknown[0]!r}")
    wanted = frozenset(capture_after)
    if kernels is None:
        kernels = os.environ.get(KERNELS_ENV, "1").strip() != "0"
    plain = tuple((stage.name, stage.fn) for stage in stages)
    # A whole-step kernel only where no stage's own state is wanted, and only one that the class
    # defining the stages gives: a subclass that changes the stages does not inherit it.
    whole = whole_step_kernels(solver) if kernels and not wanted else {}
    unknown = sorted(set(whole) - set(KERNEL_BACKENDS))
    if unknown:
        raise ValueError(f"solver {solver.name} step_kernels: expected keys among "
                         f"{', '.join(KERNEL_BACKENDS)}, given {unknown[0]!r}")
    choose = kernels and (bool(whole) or any(stage.kernels for stage in stages))
    chosen: dict[type, tuple[tuple[str, StageFn], ...]] = {}

    def stage_fns(fields: State) -> tuple[tuple[str, StageFn], ...]:
        if not choose:
            return plain
        # Chosen once per array type: a JAX step is traced once, an eager one pays a dict lookup.
        first = next(iter(fields.values()), None)
        fns = chosen.get(type(first))
        if fns is None:
            fns = chosen.setdefault(type(first), _choose(stages, whole, first))
        return fns

    def step(fields: State, dt: Any, index: Any, time: Any) -> Any:
        state: Mapping[str, Array] = {**fields, STEP_KEY: index, TIME_KEY: time, SEED_KEY: seed}
        seen = {}
        for name, fn in stage_fns(fields):
            try:
                state = fn(state, dt)
            except TypeError as error:
                if "immutable" not in str(error):
                    raise
                raise TypeError(_in_place_error(solver, name, names, error)) from None
            if not (isinstance(state, Mapping) and required <= state.keys()):
                raise ValueError(_stage_output_error(solver, name, state, names))
            if name in wanted:
                seen[name] = _copies(state)
        out = {name: state[name] for name in names}
        if carried and carried[0] in fields:  # given the carried intermediates: pass them on
            out.update({name: state[name] for name in carried})
        return (out, seen) if wanted else out

    required = frozenset(names)
    step.__name__ = f"{solver.name}_step"
    carry = solver.carry()
    carried = carry.names if carry is not None else ()
    if carry is not None:
        step.prime = _primer(carry, seed, kernels)  # type: ignore[attr-defined]
    return step


def _primer(carry: Carry, seed: int, kernels: bool) -> Callable[..., dict[str, Any]]:
    """``(fields, dt, step, time) -> fields`` with ``carry``'s intermediates added, by its
    ``prime`` stage's kernel for the fields' library (its ``fn`` without ``kernels``)."""
    def prime(fields: State, dt: Any, index: Any, time: Any) -> dict[str, Any]:
        state = {**fields, STEP_KEY: index, TIME_KEY: time, SEED_KEY: seed}
        first = next(iter(fields.values()), None)
        fn = _choose((carry.prime,), {}, first)[0][1] if kernels else carry.prime.fn
        state = fn(state, dt)
        return {**fields, **{name: state[name] for name in carry.names}}

    return prime


def _in_place_error(solver: AbstractSolver, stage: str, names: Sequence[str],
                     error: TypeError) -> str:
    """A stage that assigned into an array of a library whose arrays are immutable (JAX)."""
    text = " ".join(str(error).split())
    return (f"solver {solver.name}: stage {stage!r} updates an array in place, which JAX arrays "
            f"do not allow; return new arrays instead, e.g. {{**state, {names[0]!r}: "
            f"state[{names[0]!r}].at[0].set(value)}} ({text})")


def _stage_output_error(solver: AbstractSolver, stage: str, state: Any,
                        names: Sequence[str]) -> str:
    """What a stage returned wrong: not a mapping, or a mapping without some fields."""
    where = f"solver {solver.name}: stage {stage!r}"
    if not isinstance(state, Mapping):
        return (f"{where}: expected the new state, a mapping holding every field "
                f"({', '.join(names)}), given a {type(state).__name__}; return e.g. "
                f"{{**state, {names[0]!r}: new_value}}")
    missing = [name for name in names if name not in state]
    return (f"{where}: expected the new state to hold every field ({', '.join(names)}), given "
            f"one without {', '.join(map(repr, missing))}; return e.g. "
            f"{{**state, {missing[0]!r}: new_value}}")


def whole_step_kernels(solver: AbstractSolver) -> dict[str, StageFn]:
    """The whole-step kernels a step of ``solver`` may run: its ``step_kernels()`` where the
    class that defines them also defines ``stages``, else none."""
    def defined_by(name: str) -> type | None:
        return next((c for c in type(solver).__mro__ if name in vars(c)), None)

    if defined_by("step_kernels") is not defined_by("stages"):
        return {}
    return dict(solver.step_kernels())


#: The name a whole-step kernel goes by in errors (it stands for every stage).
WHOLE_STEP = "step"


def _choose(stages: Sequence[Stage], whole: Mapping[str, StageFn], array: Any
            ) -> tuple[tuple[str, StageFn], ...]:
    """The whole-step kernel for the library of ``array`` where there is one, else each stage
    (by name) with its kernel for that library where it has one, else its ``fn``."""
    kind = ("numpy" if is_numpy_array(array) else "jax" if is_jax_array(array)
            else "torch" if is_torch_array(array) else None)
    if kind in whole:
        return ((WHOLE_STEP, whole[kind]),)
    return tuple((stage.name, stage.kernels.get(kind, stage.fn) if kind else stage.fn)
                 for stage in stages)


def _copies(state: Mapping[str, Any]) -> dict[str, Any]:
    """The arrays of ``state`` (not its step, time and seed), copied on their device."""
    return {k: array_namespace(v).asarray(v, copy=True) if is_array_api_obj(v) else v
            for k, v in state.items() if k not in (STEP_KEY, TIME_KEY, SEED_KEY)}
