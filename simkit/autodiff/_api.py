"""Gradients of an objective of a run: ``value_and_grad``, ``grad`` and ``run_function``."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device

from simkit import _stop
from simkit.autodiff._checkpoint import Checkpointing
from simkit.autodiff._function import (
    GRAD_BACKENDS,
    DifferentiableRun,
    check_differentiable,
    param_units,
    schedule_steps,
)
from simkit.autodiff._objective import per_unit, real_scalar
from simkit.autodiff._reuse import checkpoint_steps, value_and_grad_reusing
from simkit.backends import installed_backends
from simkit.driver import execute, failed
from simkit.errors import NonFiniteError, RunInterrupted, ScenarioError
from simkit.io import AdjointStream, GradientVariable, exclusive, release, schema, write_gradients
from simkit.io import mark_gradients_stopped as mark_stopped
from simkit.io.schema import (
    ATTR_CHECKPOINT,
    ATTR_GRADIENTS,
    ATTR_OBJECTIVE,
    ATTR_REUSED,
    GRADIENT_PREFIX,
    GRADIENTS_AWAITED,
    GRADIENTS_PENDING,
    OBJECTIVE,
)
from simkit.scenario import RunPlan, check_not_input, plan_run, streams_as_mappings
from simkit.schedule import STREAM_KEYS, parse_schedule, parse_stream

Objective = Callable[[Mapping[str, Any], Mapping[str, Mapping[str, Any]]], Any]


@dataclass(frozen=True)
class GradResult:
    """What ``value_and_grad`` computed (unpacks as ``value, grad = result``).

    Attributes:
        value: the objective.
        grad: dL/d(name) for each ``wrt`` name: a float for a parameter, a host array for an
            initial field.
        adjoints: per gradient stream, ``{"step": steps, field: dL/du_k stacked along step}``.
        path: the run file written (``output``), else None.
    """

    value: float
    grad: dict[str, Any]
    adjoints: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    path: Path | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.value, self.grad))


def _plan(scenario: Any, sets: Sequence[str], overrides: Mapping[str, Any], overwrite: bool,
          allow_import: bool | None) -> RunPlan:
    return plan_run(scenario, sets=sets, overrides=overrides, overwrite=overwrite,
                    allow_import=allow_import)


def _backend(plan: RunPlan, backend: str | None) -> str:
    if backend is None:
        if plan.scenario.backend in GRAD_BACKENDS:
            return plan.scenario.backend
        found = [b for b in GRAD_BACKENDS if b in installed_backends()]
        if not found:
            raise ScenarioError("expected jax or torch installed to differentiate a run, given "
                                "neither: pip install 'simkit[jax]'", key="backend")
        return found[0]
    return backend


def run_function(scenario: Any, *, backend: str | None = None, checkpoint: Any = "sqrt",
                 probe_steps: Sequence[int] = (), sets: Sequence[str] = (),
                 allow_import: bool | None = None, **overrides: Any) -> DifferentiableRun:
    """The run of ``scenario`` as a differentiable function ``(params, fields) -> (final,
    captures)`` for ``jax.grad``/``jit``/``vmap`` or torch autograd (see ``DifferentiableRun``).

    Args:
        scenario: a scenario file, mapping or ``Scenario`` (step schedules, a length in steps).
        backend: ``jax`` or ``torch``; default the scenario's when it is one, else the first
            installed.
        checkpoint: ``"sqrt"``, ``"all"`` or ``{"binomial": N}`` (see ``Checkpointing``).
        probe_steps: steps at which the function adds its ``probes`` argument to the state.
        sets, allow_import, overrides: as for ``simkit.run``.
    """
    plan = _plan(scenario, sets, overrides, True, allow_import)
    return DifferentiableRun(plan, _backend(plan, backend), checkpoint, probe_steps)


def _split_wrt(run: DifferentiableRun, wrt: Sequence[str]) -> tuple[list[str], list[str]]:
    if isinstance(wrt, str):
        wrt = [wrt]
    params, fields = [], []
    twice = sorted({name for name in wrt if list(wrt).count(name) > 1})
    if twice:
        raise ScenarioError(f"expected each name once, given {twice[0]!r} twice", key="wrt")
    for name in wrt:
        if name.startswith("initial."):
            field_name = name.split(".", 1)[1]
            if field_name not in run.field_names:
                raise ScenarioError(f"expected initial fields of {run.solver.name} "
                                    f"({', '.join(run.field_names)}), given {field_name!r}",
                                    key="wrt")
            fields.append(field_name)
        elif name in run.field_names:
            fields.append(name)
        else:
            params.append(name.split(".", 1)[1] if name.startswith("params.") else name)
    if not params and not fields:
        raise ScenarioError("expected at least one name to differentiate with respect to, "
                            "given none", key="wrt")
    check_differentiable(run.solver, params)
    return params, fields


def _gradient_streams(plan: RunPlan, gradients: Mapping[str, Any] | None
                      ) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
    """The adjoint streams ``{name: (steps, fields)}`` of ``gradients`` (the scenario's
    ``gradients`` block): each a stream of the typed spec that keeps fields only.

    Raises:
        ScenarioError: naming ``gradients.<name>`` and the key at fault.
    """
    found: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {}
    names = plan.field_names
    forward = {s.name for s in plan.streams}

    def fields_of(value: Any, key: str, what: str) -> tuple[str, ...]:
        listed = names if value == "all" else [value] if isinstance(value, str) else value
        unknown = [f for f in listed if f not in names]
        if unknown:
            raise ScenarioError(f"expected fields of {plan.solver.name} ({', '.join(names)}), "
                                f"given {unknown[0]!r}", key=key)
        return tuple(listed)

    for name, spec in streams_as_mappings(gradients or {}, "gradients").items():
        key = f"gradients.{name}"
        if not isinstance(spec, Mapping):
            raise ScenarioError(f"expected a mapping of a schedule and fields, given {spec!r}",
                                key=key)
        if name in forward:
            raise ScenarioError(f"expected a name no forward stream has, given {name!r}",
                                key=key)
        if any(k in spec for k in STREAM_KEYS if k != "fields"):
            # An adjoint stream keeps fields only: the others are keys its schedule refuses.
            parse_schedule({k: v for k, v in spec.items() if k != "fields"}, key)
        stream = parse_stream(name, spec, key, names=fields_of)
        steps = schedule_steps(stream.schedule, plan.scenario.steps or 0, key)
        kept = stream.fields
        found[name] = (steps, tuple(names) if kept is None or isinstance(kept, str) else kept)
    return found


def prepare(plan: RunPlan, objective: Objective, wrt: Sequence[str], checkpoint: Any = "sqrt",
            backend: str | None = None, gradients: Mapping[str, Any] | None = None
            ) -> tuple[DifferentiableRun, list[str], list[str],
                       dict[str, tuple[tuple[int, ...], tuple[str, ...]]]]:
    """Everything ``value_and_grad`` checks before it computes (what ``simkit validate`` runs
    for an ``objective`` block): the run as a function, the parameters and fields of ``wrt``,
    and the adjoint streams ``{name: (steps, fields)}``.

    Raises:
        ScenarioError: as ``value_and_grad``; and an objective with a ``check(run)`` method
            (``misfit``) refusing this run (a stream it does not capture or keep).
    """
    policy = Checkpointing.parse(checkpoint)
    adjoint = _gradient_streams(plan, gradients)
    probe_steps = sorted({s for steps, _ in adjoint.values() for s in steps})
    run = DifferentiableRun(plan, _backend(plan, backend), policy, probe_steps)
    params, fields = _split_wrt(run, wrt)
    run.check_initial(params)
    check = getattr(objective, "check", None)
    if callable(check):
        check(run)
    return run, params, fields, adjoint


def value_and_grad(
    scenario: Any,
    objective: Objective,
    wrt: Sequence[str],
    *,
    checkpoint: Any = "sqrt",
    backend: str | None = None,
    gradients: Mapping[str, Any] | None = None,
    output: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    sets: Sequence[str] = (),
    allow_import: bool | None = None,
    progress: Any = None,
    resume: Any = None,
    **overrides: Any,
) -> GradResult:
    """The objective of a run and its gradient with respect to parameters and initial fields.

    Args:
        scenario: a scenario file, mapping or ``Scenario`` (step schedules, a length in steps).
        objective: ``objective(final, captures) -> scalar`` (see ``simkit.autodiff.misfit``).
        wrt: differentiable parameter names (``diffusivity`` or ``params.diffusivity``) and
            field names (``u`` or ``initial.u``: the gradient with respect to the initial field).
        checkpoint: ``"sqrt"`` (O(sqrt n) states held, one extra forward pass), ``"all"``, or
            ``{"binomial": N}`` (at most N states stored, the fewest recomputed steps for
            that many; see ``Checkpointing``).
        backend: ``jax`` or ``torch``; default the scenario's when it is one, else the first
            installed. Device and dtype are the scenario's.
        gradients: adjoint streams, ``{name: {<schedule>, fields: [...]}}``: dL/du_k at the
            steps of each schedule (step 0 is the initial state).
        output: write the run file there (forward run on the scenario's backend, its streams
            and final state) with the objective, gradients and adjoint streams added.
        overwrite: replace an existing ``output``.
        sets, allow_import, overrides: as for ``simkit.run``.
        progress: as for ``simkit.run``: called during the forward run that writes ``output``.
        resume: finish the unfinished run file at ``output`` instead of starting it: a
            ``simkit.driver.ResumePoint`` to continue its forward run from, or ``"gradients"``
            when its forward run is whole and only the gradients are missing (what
            ``simkit resume`` passes).

    The file says ``complete`` only once its gradients are in it: until then its status is
    ``running`` (``interrupted`` or ``failed`` if the gradients stopped so) and its
    ``simkit_gradients`` attribute ``pending``, and ``simkit resume`` computes them.

    Raises:
        ScenarioError: bad input (a solver or parameter that is not differentiable, schedules a
            differentiable run cannot know in advance, a backend that does not differentiate).
    """
    if output is not None:
        overrides = {**overrides, "output": os.fspath(output)}
    # Without an output nothing is written: an existing file at the scenario's is no obstacle.
    plan = _plan(scenario, sets, overrides, overwrite or output is None, allow_import)
    _refuse_observations(plan, objective, output)
    run, params, fields, adjoint = prepare(plan, objective, wrt, checkpoint, backend, gradients)
    written, reused, lock = _forward(plan, run, output, progress, resume)
    try:
        _stop.check()
        value, grads, adjoints = _gradients(run, objective, written, reused, params, fields,
                                            adjoint)
        if written is not None:
            _stop.check()
            _check_finite(value, grads, adjoints)
            _write(plan, written, objective, value, grads, adjoints, run.checkpointing,
                   len(reused))
    except BaseException as error:
        if written is None:
            raise
        _stopped(error, written)
    finally:
        release(lock)
    return GradResult(value, grads, adjoints, written)


def _refuse_observations(plan: RunPlan, objective: Objective,
                         output: str | os.PathLike[str] | None) -> None:
    """Refuse an output that is the objective's observations file (it would be replaced)."""
    observed = getattr(objective, "path", None)
    if output is not None and observed is not None:
        check_not_input(plan.output, {"observations file of the objective": observed},
                        given=output)


def _forward(plan: RunPlan, run: DifferentiableRun, output: Any, progress: Any, resume: Any
             ) -> tuple[Path | None, tuple[int, ...], Any]:
    """With an output: the run file, the steps of its checkpoints the backward pass starts
    from, and its lock (held while the gradients are computed: the file's writer is alive, and
    watch, inspect and resume see a run going on); else nothing.

    The run that writes the file goes first (``running``, its gradients pending; the file is
    complete only once they are written), unless only its gradients are missing
    (``resume="gradients"``); where it keeps checkpoints, the backward pass starts its
    segments from them instead of running the steps forward again."""
    if output is None:
        return None, (), None
    if resume == "gradients":
        written = Path(plan.output)
    else:
        written = Path(execute(plan, progress=progress, resume=resume, closing={
            schema.ATTR_STATUS: schema.STATUS_RUNNING, ATTR_GRADIENTS: GRADIENTS_PENDING},
            opening={ATTR_GRADIENTS: GRADIENTS_AWAITED}).path)
    return written, checkpoint_steps(plan, run), exclusive(written)


def _gradients(run: DifferentiableRun, objective: Objective, written: Path | None,
               reused: tuple[int, ...], params: list[str], fields: list[str],
               adjoint: Mapping[str, tuple[tuple[int, ...], tuple[str, ...]]]
               ) -> tuple[float, dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """The objective, its gradient and the adjoint streams: the backward pass from the run
    file's checkpoints (``reused``), else over the whole run."""
    probe_fields = sorted({f for _, names in adjoint.values() for f in names})
    if reused:
        value, grads, probe_grads = value_and_grad_reusing(
            run, objective, written, reused, params, fields, probe_fields)
    else:
        value, grads, probe_grads = _whole_run(run, objective, params, fields, probe_fields)
    probe_steps = list(run.probe_steps)
    adjoints = {}
    for name, (steps, names) in adjoint.items():
        at = [probe_steps.index(s) for s in steps]
        adjoints[name] = {"step": np.asarray(steps, dtype=np.int64),
                          **{f: probe_grads[f][at] for f in names}}
    return value, grads, adjoints


def _stopped(error: BaseException, written: Path) -> None:
    """Mark the run file as the gradient phase stopped (interrupted or failed) and raise what
    the caller is told: its forward run is kept, without gradients."""
    interrupted = isinstance(error, KeyboardInterrupt)
    with contextlib.suppress(Exception):
        mark_stopped(written, {schema.ATTR_STATUS: schema.STATUS_INTERRUPTED} if interrupted
                     else failed(error, schema.STATUS_NON_FINITE)
                     if isinstance(error, NonFiniteError) else failed(error))
    if interrupted:
        _stop.take()
        raise RunInterrupted(str(error) or "SIGINT", written) from error
    if isinstance(error, NonFiniteError):
        raise NonFiniteError(f"{written}: {error} (the forward run is kept, without "
                             f"gradients)") from None
    if not isinstance(error, ScenarioError):
        raise error
    # The objective is the user's code: known bad only once it is taken of the run.
    raise ScenarioError(f"{error.message} (the forward run is written to {written}, "
                        f"without gradients)", source=error.source, key=error.key,
                        line=error.line) from None


def _check_finite(value: float, grads: Mapping[str, Any],
                  adjoints: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Refuse to write a NaN or infinite objective, gradient or adjoint.

    Raises:
        NonFiniteError: naming the first one and saying what it holds.
    """
    found = [("the objective", value), *((f"gradient {k}", v) for k, v in grads.items()),
             *((f"adjoint stream {s}: {k}", v) for s, c in adjoints.items()
               for k, v in c.items() if k != "step")]
    for name, array in found:
        array = np.asarray(array)
        if not np.all(np.isfinite(array)):
            bad = array[~np.isfinite(array)].reshape(-1)[0]
            shown = f"{float(bad)}" if array.ndim == 0 else \
                f"{np.count_nonzero(~np.isfinite(array))} of {array.size} values non-finite " \
                f"(first {float(bad)})"
            raise NonFiniteError(f"expected a finite objective and gradients, given {shown} "
                                 f"for {name}")


def grad(scenario: Any, objective: Objective, wrt: Sequence[str], **options: Any
         ) -> dict[str, Any]:
    """The gradient of ``objective`` of a run with respect to ``wrt``, without its value.

    The same as ``value_and_grad(scenario, objective, wrt, **options).grad``; every option of
    ``value_and_grad`` applies (``checkpoint``, ``backend``, ``gradients``, ``output``,
    overrides).

    Args:
        scenario: a scenario file, mapping or ``Scenario``, as for ``simkit.run``.
        objective: ``objective(final, captures) -> scalar``, e.g. ``simkit.misfit(...)``.
        wrt: names of differentiable parameters and of initial fields.
        **options: as for ``value_and_grad``.

    Returns:
        The gradients by name: a float per parameter, an array of the field's shape per field.

    Example:
        ``simkit.grad("heat.yaml", simkit.misfit("truth.nc", "snapshots"), ["diffusivity"])``
    """
    return value_and_grad(scenario, objective, wrt, **options).grad


# -------------------------------------------------------------------------- the pass


def _whole_run(run: DifferentiableRun, objective: Objective, params: list[str],
               fields: list[str], probe_fields: list[str]
               ) -> tuple[float, dict[str, Any], dict[str, np.ndarray]]:
    """The objective of the whole run and its gradient by the run function (compiled where
    the library compiles), with the adjoints at its probe steps."""
    p0, f0 = run.initial_params(), run.initial_fields()
    probes = {f: array_namespace(f0[f]).zeros((len(run.probe_steps), *f0[f].shape),
                                              dtype=f0[f].dtype, device=device(f0[f]))
              for f in probe_fields} if probe_fields else None

    def loss(pw: dict[str, Any], fw: dict[str, Any], probe: Any) -> Any:
        # The run starts where these parameter values put it (initial_params).
        p = {**p0, **pw}
        final, captures = run(p, run.at_params({**f0, **fw}, p), probe)
        return real_scalar(objective(final, captures))

    value, (gp, gf, gprobe) = run.ops.value_and_grad(
        loss, ({k: p0[k] for k in params}, {k: f0[k] for k in fields}, probes))
    host = run.backend.to_host
    grads: dict[str, Any] = {k: float(gp[k]) for k in params}
    grads.update(host({k: gf[k] for k in fields}))
    return float(value), grads, host(gprobe or {})


# -------------------------------------------------------------------------- the file


def _write(plan: RunPlan, path: Path, objective: Objective, value: float,
           grads: Mapping[str, Any], adjoints: Mapping[str, Mapping[str, np.ndarray]],
           policy: Checkpointing, reused: int) -> Path:
    name = str(getattr(objective, "name", getattr(objective, "__name__", OBJECTIVE)))
    units = str(getattr(objective, "units", "1"))
    dtype = np.dtype(plan.scenario.dtype)
    specs = {f.name: f for f in plan.solver.fields()}
    gradients = []
    for key, grad_value in grads.items():
        if key in specs:
            spec = specs[key]
            gradients.append(GradientVariable(
                f"{GRADIENT_PREFIX}initial_{key}", spec.dims, per_unit(units, spec.units),
                f"derivative of {name} with respect to the initial {spec.long_name}",
                np.asarray(grad_value, dtype=dtype)))
        else:
            gradients.append(GradientVariable(
                f"{GRADIENT_PREFIX}{key}", (), per_unit(units, param_units(type(plan.solver), key)),
                f"derivative of {name} with respect to the parameter {key}",
                np.asarray(grad_value, dtype=np.float64)))
    streams = []
    for stream_name, found in adjoints.items():
        steps = found["step"]
        variables = tuple(GradientVariable(
            f, specs[f].dims, per_unit(units, specs[f].units),
            f"adjoint: derivative of {name} with respect to the {specs[f].long_name}",
            np.asarray(v, dtype=dtype)) for f, v in found.items() if f != "step")
        streams.append(AdjointStream(stream_name, steps, steps * plan.dt, variables))
    write_gradients(path, GradientVariable(OBJECTIVE, (), units, name,
                                           np.asarray(value, dtype=np.float64)),
                    gradients, streams, plan.solver.time_units,
                    {ATTR_OBJECTIVE: name, ATTR_CHECKPOINT: json.dumps(policy.form),
                     ATTR_REUSED: np.int64(reused)})
    return path
