"""A planned run as a differentiable function: (parameters, initial fields) -> (final state,
captures), on JAX (``jax.grad``, ``vjp``, ``jvp``, ``jit``, ``vmap``) or torch (autograd).

The steps are the solver's own stages (``simkit.solver.make_step``), called with the types of the
backend contract; the solver is rebuilt around the parameter values (``with_params``), so they
may be traced or tracked arrays. The run is cut into segments of about sqrt(n) steps; under the
``sqrt`` policy each segment is recomputed on the way back (``jax.checkpoint`` inside a
``lax.scan`` over segments on JAX, ``torch.utils.checkpoint`` on torch), so memory holds
O(sqrt n) states whatever the run's length. Under ``{"binomial": N}`` the steps run with their
own backward pass following Griewank's binomial schedule over N stored states
(``simkit.autodiff._reverse``): reverse mode only there.

Probes give the adjoint at intermediate steps: a probe is a zero added to the state at a chosen
step, and the derivative of an objective with respect to it is the derivative with respect to
that state, dL/du_k.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from simkit.autodiff._checkpoint import Checkpointing
from simkit.autodiff._reverse import Plan
from simkit.backends import AbstractBackend, get_backend
from simkit.backends._base import GradOps, SegmentPlan
from simkit.errors import ScenarioError
from simkit.scenario import RunPlan
from simkit.schedule import AbstractSchedule
from simkit.solver import make_step, with_params

#: Backends that differentiate.
GRAD_BACKENDS = ("jax", "torch")

_UNITS_IN_DESCRIPTION = re.compile(r"\[([^\]]+)\]\s*$")


@dataclass(frozen=True)
class CaptureSet:
    """The end-of-step states a stream captures: its name, fields, diagnostics and steps."""

    name: str
    fields: tuple[str, ...]
    diagnostics: tuple[str, ...]
    steps: tuple[int, ...]


#: The most steps one gradient stream may take adjoints at (each is a full state in memory).
MAX_ADJOINT_STEPS = 2**20


def schedule_steps(schedule: AbstractSchedule, steps: int, key: str) -> tuple[int, ...]:
    """The steps of a run of ``steps`` steps at which ``schedule`` fires.

    Raises:
        ScenarioError: naming ``key``, for schedules a differentiable run cannot know in
            advance (simulated or wall-clock times, conditions).
    """
    for member in schedule.members():
        if not member.steps_known:
            raise ScenarioError(f"expected step schedules (every, at, logspace, first, last, "
                                f"window) in a differentiable run, given {member.kind}", key=key)
    count = schedule.count(steps, float(steps))
    if count > MAX_ADJOINT_STEPS:  # each adjoint is held in memory: refused before listing
        raise ScenarioError(f"expected at most {MAX_ADJOINT_STEPS} adjoint steps in one stream "
                            f"(each is a state held in memory), given a schedule making about "
                            f"{count:.2g}", key=key)
    found, step = [], schedule.next_step(-1)
    while step is not None and step <= steps:
        found.append(step)
        step = schedule.next_step(step)
    if schedule.at_end and steps not in found:
        found.append(steps)
    if not found:  # as a forward stream that captures nothing is refused
        raise ScenarioError(f"expected a schedule that captures within the run ({steps} steps), "
                            "given one that captures nothing", key=key)
    return tuple(found)


def param_units(solver_cls: Any, name: str) -> str:
    """A parameter's units, as its description ends (``"... [m2 s-1]"``), else ``"1"``."""
    description = solver_cls.Params.model_fields[name].description or ""
    found = _UNITS_IN_DESCRIPTION.search(description)
    return found.group(1) if found else "1"


def check_differentiable(solver: Any, names: Sequence[str] = ()) -> None:
    """Refuse a solver that declares no differentiable parameters, and parameter names it does
    not declare differentiable, naming them and listing those it does."""
    allowed = tuple(type(solver).differentiable)
    if not allowed:
        raise ScenarioError(f"expected a differentiable solver (one that declares "
                            f"differentiable parameters), given {solver.name}, which declares "
                            f"none (discrete or stochastic)", key="solver")
    for name in names:
        if name not in allowed:
            raise ScenarioError(f"expected a differentiable parameter of {solver.name} "
                                f"({', '.join(allowed)}), given {name!r}", key="wrt")


class DifferentiableRun:
    """A planned run as a function ``(params, fields) -> (final, captures)``.

    Args:
        plan: from ``simkit.scenario.plan_run``: fixed ``dt``, a length in ``steps`` and step
            schedules only.
        backend: ``jax`` or ``torch`` (device and dtype are the plan's).
        checkpoint: ``"sqrt"`` (O(sqrt n) states held in reverse mode), ``"all"`` or
            ``{"binomial": N}`` (at most N states stored; forward mode and second derivatives
            are not available under it).
        probe_steps: steps at which ``__call__`` adds its ``probes`` to the state, for adjoints
            at those steps (step 0 is the initial state).

    Calling it: ``params`` maps some of the solver's differentiable parameters to values (0-d
    arrays or numbers; the others keep the plan's), ``fields`` maps every field to its initial
    array; ``probes`` maps fields to arrays ``(len(probe_steps), *shape)``. It returns the final
    fields and ``captures[stream][name]``: the stream's fields and diagnostics stacked along a
    first ``step`` axis, and its steps under ``"step"`` (a host array).
    """

    def __init__(self, plan: RunPlan, backend: str = "jax", checkpoint: Any = "sqrt",
                 probe_steps: Sequence[int] = ()) -> None:
        if backend not in GRAD_BACKENDS:
            raise ScenarioError(f"expected a backend that differentiates ({', '.join(GRAD_BACKENDS)})"
                                f", given {backend!r}", key="backend")
        sc = plan.scenario
        if sc.steps is None or plan.stop_when is not None:
            raise ScenarioError("expected a run length in steps without stop_when in a "
                                "differentiable run, given until or stop_when", key="steps")
        check_differentiable(plan.solver)
        self.plan, self.library = plan, backend
        self.solver: Any = plan.solver
        self.backend: AbstractBackend = get_backend(backend, sc.device, sc.dtype, compile=False)
        self.ops: GradOps = self.backend.grad_ops()
        self.checkpointing = Checkpointing.parse(checkpoint)
        self.steps, self.dt, self.dtype = sc.steps, plan.dt, sc.dtype
        self.field_names = tuple(plan.field_names)
        captures = []
        for stream in plan.streams:
            if stream.stage is not None:
                raise ScenarioError("expected end-of-step streams in a differentiable run, given "
                                    f"stage {stream.stage!r}", key=f"outputs.{stream.name}.stage")
            steps = schedule_steps(stream.schedule, self.steps, f"outputs.{stream.name}")
            captures.append(CaptureSet(stream.name, stream.fields, stream.diagnostics, steps))
        self.captures = tuple(captures)
        self.probe_steps = tuple(sorted(set(probe_steps)))
        bad = [s for s in self.probe_steps if not 0 <= s <= self.steps]
        if bad:
            raise ScenarioError(f"expected probe steps from 0 to {self.steps}, given {bad[0]}",
                                key="probe_steps")

    def segment(self, first: int, last: int) -> DifferentiableRun:
        """The same run over steps ``first`` to ``last`` only, started from the state at
        ``first``: its captures and probes are those of steps after ``first`` up to ``last``
        (from step 0 on when ``first`` is 0), counted from ``first``, and streams that take
        none there are left out; called with
        ``offset=first`` it steps as the whole run does there (step indices and times)."""
        if not 0 <= first < last <= self.steps:
            raise ValueError(f"expected 0 <= first < last <= {self.steps}, given {first}, "
                             f"{last}")
        low = -1 if first == 0 else first

        def inside(steps: Sequence[int]) -> tuple[int, ...]:
            return tuple(s - first for s in steps if low < s <= last)

        part = copy.copy(self)
        part.steps = last - first
        # Streams that take nothing in the segment are left out (nothing to stack).
        part.captures = tuple(dataclasses.replace(c, steps=inside(c.steps))
                              for c in self.captures if inside(c.steps))
        part.probe_steps = inside(self.probe_steps)
        return part

    # ----------------------------------------------------------------- inputs

    def initial_params(self) -> dict[str, Any]:
        """The plan's values of the differentiable parameters, as 0-d arrays of the run's dtype."""
        return {name: self.scalar(getattr(self.solver.params, name))
                for name in type(self.solver).differentiable}

    def initial_fields(self) -> dict[str, Any]:
        """The plan's initial fields, as arrays of the run's dtype on its device."""
        host = self.solver.initial_state(self.plan.initial,
                                         np.random.default_rng(self.plan.scenario.seed))
        return {name: self.backend.asarray(host[name]) for name in self.field_names}

    def at_params(self, fields: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
        """``fields``, the initial state at the plan's parameter values (``initial_fields``),
        taken to the values of ``params`` where the solver's initial state depends on them
        (``initial_params``, ``initial_at``): the start of the run that those values make,
        differentiable in both; ``fields`` itself where it depends on none of them."""
        initial = self.plan.initial
        names = [n for n in self.solver.initial_params(initial) if n in params]
        if not names:
            return dict(fields)
        return {**fields, **self.solver.initial_at(initial, fields, {n: params[n] for n in names})}

    def check_initial(self, params: Sequence[str]) -> None:
        """Refuse a parameter of ``params`` that the initial state depends on without the solver
        declaring how (``initial_params``): its gradient would be that of another model, one
        whose start does not move with it.

        Raises:
            ScenarioError: naming ``wrt``, the parameter and the initial condition.
        """
        declared = set(self.solver.initial_params(self.plan.initial))
        seed = self.plan.scenario.seed
        state = self.solver.initial_state(self.plan.initial, np.random.default_rng(seed))
        for name in params:
            if name in declared:
                continue
            value = float(getattr(self.solver.params, name))
            moved = with_params(self.solver, {name: value * (1 + 2.0**-10) if value else
                                              2.0**-10})
            other = moved.initial_state(self.plan.initial, np.random.default_rng(seed))
            if all(np.array_equal(np.asarray(state[k]), np.asarray(other[k]))
                   for k in self.field_names):
                continue
            kind = getattr(self.plan.initial, "kind", None)
            start = f"initial.kind {kind}" if kind is not None else "its initial condition"
            raise ScenarioError(
                f"expected a parameter the initial state does not depend on, or one the solver "
                f"declares in initial_params, given {name!r}: {self.solver.name}'s initial state "
                f"({start}) changes with {name} and the solver does not say how, so its gradient "
                f"would leave that out", key="wrt")

    def scalar(self, value: Any) -> Any:
        """``value`` as a 0-d array of the run's dtype and library."""
        return self.backend.asarray(np.asarray(value, dtype=np.float64))

    # ----------------------------------------------------------------- calling

    def __call__(self, params: Mapping[str, Any], fields: Mapping[str, Any],
                 probes: Mapping[str, Any] | None = None, offset: Any = 0
                 ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        check_differentiable(self.solver, list(params))
        missing = [name for name in self.field_names if name not in fields]
        if missing:
            raise ScenarioError(f"expected every field of {self.solver.name} "
                                f"({', '.join(self.field_names)}), given none for {missing[0]!r}",
                                key="fields")
        solver = with_params(self.solver, params)
        step = make_step(solver, self.plan.scenario.seed, kernels=self.ops.kernels)
        fields = {name: fields[name] for name in self.field_names}
        # Probes only where the run has probe steps.
        probes = dict(probes) if probes and self.probe_steps else None
        _, _, probe_slot = self._layout()
        if probes is not None and 0 in probe_slot:
            fields = {k: v + probes[k][probe_slot[0]] if k in probes else v
                      for k, v in fields.items()}
        with self.ops.rules():
            if self.checkpointing.kind == "binomial" and self.steps >= 1:
                final, taken = self._run_binomial(params, fields, probes, offset)
            else:
                final, pieces, order = self.ops.run_segments(self._segment_plan(), step, fields,
                                                             probes, offset)
                taken = _Taken(self._taken_fields(), fields, pieces, order)
            return final, self._captures(solver, taken)

    def _captures(self, solver: Any, taken: _Taken) -> dict[str, dict[str, Any]]:
        """Per stream, its fields and diagnostics at its steps, stacked along a first axis."""
        diagnostics = {d.name: d.fn for d in solver.diagnostics()}
        captures = {}
        for capture in self.captures:
            found: dict[str, Any] = {"step": np.asarray(capture.steps, dtype=np.int64)}
            for name in capture.fields:
                found[name] = taken.stack(capture.steps, name)
            for name in capture.diagnostics:
                values = [diagnostics[name](taken.state(s)) for s in capture.steps]
                found[name] = array_namespace(*values, *taken.start.values()).stack(values)
            captures[capture.name] = found
        return captures

    # ------------------------------------------------------------- the layout

    def _layout(self) -> tuple[list[int], dict[int, int], dict[int, int]]:
        """Steps whose states are taken (sorted), and the slot of each such step and of each
        probe step."""
        taken = sorted({s for c in self.captures for s in c.steps})
        return taken, {s: i for i, s in enumerate(taken)}, {s: i for i, s in
                                                            enumerate(self.probe_steps)}

    def _taken_fields(self) -> tuple[str, ...]:
        wanted = {n for c in self.captures for n in c.fields}
        if any(c.diagnostics for c in self.captures):
            wanted = set(self.field_names)
        return tuple(n for n in self.field_names if n in wanted)

    def _segment_plan(self) -> SegmentPlan:
        _, take_slot, probe_slot = self._layout()
        return SegmentPlan(self.steps, self.checkpointing.segment_length(self.steps), self.dt,
                           self.field_names, self._taken_fields(), take_slot, probe_slot,
                           self.checkpointing.remat)

    def _run_binomial(self, params: Mapping[str, Any], fields: dict[str, Any],
                      probes: dict[str, Any] | None, offset: Any) -> tuple[dict[str, Any], Any]:
        """The steps under the binomial schedule (``simkit.autodiff._reverse``): its own
        backward pass, so the parameters go in as arguments and the step is rebuilt around
        them."""
        take, _, probe_slot = self._layout()
        names = self._taken_fields()
        plan = Plan(self.checkpointing.schedule(self.steps), self.dt, self.field_names, names,
                    tuple(s for s in take if s >= 1), probe_slot if probes else {})
        seed, kernels = self.plan.scenario.seed, self.ops.kernels

        def step_of(values: Mapping[str, Any]) -> Any:
            return make_step(with_params(self.solver, values), seed, kernels=kernels)

        values = {k: self.ops.param(v) for k, v in params.items()}
        final, pieces, order = self.ops.run_binomial(plan, step_of, values, fields,
                                                     probes or {}, offset)
        return final, _Taken(names, fields, pieces, order)


class _Taken:
    """The states a run took: the start (step 0) and pieces of later ones, found by step."""

    def __init__(self, names: tuple[str, ...], start: dict[str, Any],
                 pieces: list[dict[str, Any]], order: list[tuple[int, int | None, int]]
                 ) -> None:
        self.names, self.start, self.pieces = names, start, pieces
        # step -> (piece, index in it; None where the piece is that one state)
        self.where = {step: (piece, j) for piece, j, step in order}

    def state(self, step: int) -> dict[str, Any]:
        """The fields taken at ``step``."""
        if step == 0:
            return {name: self.start[name] for name in self.names}
        piece, j = self.where[step]
        return {name: self.pieces[piece][name] if j is None else self.pieces[piece][name][j]
                for name in self.names}

    def stack(self, steps: Sequence[int], name: str) -> Any:
        """``name`` at ``steps`` (increasing), stacked along a first axis: one gather per piece
        of consecutive steps where the pieces are blocks (JAX)."""
        parts: list[Any] = []
        run_piece: Any = None
        run_index: list[int] = []

        def close() -> None:
            if run_index:
                block = self.pieces[run_piece][name]
                xp = array_namespace(block)
                parts.append(xp.take(block, xp.asarray(run_index), axis=0))

        for step in steps:
            piece: Any
            j: int | None
            piece, j = (None, None) if step == 0 else self.where[step]
            if j is not None and piece == run_piece:
                run_index.append(j)
                continue
            close()
            run_piece, run_index = piece, []
            if j is None:
                value = self.start[name] if step == 0 else self.pieces[piece][name]
                parts.append(value[None])
            else:
                run_index.append(j)
        close()
        return parts[0] if len(parts) == 1 else array_namespace(*parts).concat(parts, axis=0)
