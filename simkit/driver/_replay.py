"""Retaking a block's steps on the host: the steps a block took (pieces), their replay, and the
finiteness checks that use it to name the step, stage and field where a run went non-finite."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from array_api_compat import array_namespace

from simkit.backends import AbstractBackend
from simkit.driver._run import Run
from simkit.driver._steps import step_for
from simkit.errors import NonFiniteError


@dataclass(frozen=True)
class Piece:
    """Steps a block took, as a replay retakes them: ``count`` steps of length ``dt``, the
    ``i``-th starting at simulated time ``origin + (offset + i) * spacing``."""

    count: int
    dt: float
    origin: float
    offset: int
    spacing: float

    def time(self, i: int) -> float:
        return self.origin + (self.offset + i) * self.spacing


def block_steps(pieces: list[Piece]) -> Iterator[tuple[float, float]]:
    """``(dt, time)`` of each step the pieces hold, in order: a replay retakes them so."""
    for piece in pieces:
        for i in range(piece.count):
            yield piece.dt, piece.time(i)


def replay(run: Run, fields: Any, step: int, pieces: list[Piece], upto: int) -> Any:
    """The state at step ``upto`` from ``fields`` at ``step``, retaking the block's steps."""
    for dt, time in block_steps(pieces):
        if step == upto:
            break
        fields = run.backend.call_step(run.step_fn, fields, dt, step, time)
        step += 1
    return fields


def _arrays(value: Any) -> list[Any]:
    """The arrays in a state entry: an array, or (as a stage may store) tuples and lists of them;
    Python numbers (the seed) are no data."""
    if isinstance(value, (tuple, list)):
        return [array for item in value for array in _arrays(item)]
    # type(), not isinstance: NumPy's float64 scalars (what a reduction returns) are floats.
    return [] if type(value) in (bool, int, float, complex) or value is None else [value]


def all_finite(fields: Mapping[str, Any]) -> Any:
    """Whether every array in ``fields`` is finite, as a 0-d bool (on the device); entries may
    be arrays or tuples of arrays."""
    values = [a for value in fields.values() for a in _arrays(value)]
    if not values:
        return True
    xp = array_namespace(*values)
    return xp.all(xp.stack([xp.all(xp.isfinite(v)) for v in values]))


def _finite_flags(state: Mapping[str, Any]) -> dict[str, Any]:
    """``all_finite`` of each entry of ``state`` apart (one compiled call for a whole state)."""
    return {name: all_finite({name: value}) for name, value in state.items() if _arrays(value)}


def non_finite(backend: AbstractBackend, state: Mapping[str, Any]) -> list[str]:
    """The names of the entries of ``state`` holding a NaN or an infinity."""
    flags = backend.call(_finite_flags, dict(state))
    return [name for name, flag in flags.items() if not bool(flag)]


def check_start(run: Run) -> None:
    """Stop with NonFiniteError when the state the run starts from (its initial condition or a
    checkpoint) is not finite, before any of it is written as data."""
    bad = non_finite(run.backend, run.fields)
    if bad:
        raise NonFiniteError(
            f"non-finite value in field {bad[0]!r} of the state at step {run.step}, where the "
            f"run starts (its initial condition, or the checkpoint it resumes from); nothing "
            f"was computed from it")


def check_finite(run: Run, start: dict[str, Any], start_step: int, pieces: list[Piece]) -> None:
    """Stop with NonFiniteError naming step, stage and field if the run's state is not finite;
    ``start`` at ``start_step`` is where the block that reached it began."""
    if bool(run.backend.call(all_finite, run.fields)):
        return
    # Replay from the block's start one step at a time with the run's own step function
    # (compiled once, as every function below), then stage by stage at the first step whose
    # result is not finite. Times are computed as the block computed them.
    fields, step = start, start_step
    for dt, time in block_steps(pieces):
        new = run.backend.call_step(run.step_fn, fields, dt, step, time)
        if not bool(run.backend.call(all_finite, new)):
            run.fields, run.step, run.time = fields, step, time
            raise NonFiniteError(_locate(run, fields, dt, step, time))
        fields, step = new, step + 1
    raise NonFiniteError(f"non-finite value at step {run.step}; the stage could not be found by "
                         "replay")


def _locate(run: Run, fields: dict[str, Any], dt: float, step: int, time: float) -> str:
    """The message naming the first stage of the step from ``fields`` after which a value is not
    finite, and the entry (field or intermediate) holding it."""
    solver, seed = run.plan.solver, run.plan.scenario.seed
    where = f"step {step + 1} (time {time + dt:g})"
    for stage in solver.stages():
        _, seen = run.backend.call_step(step_for(solver, seed, (stage.name,)), fields, dt, step,
                                        time)
        bad = non_finite(run.backend, seen[stage.name])
        if bad:
            where = f"field {bad[0]!r} after stage {stage.name!r} of {where}"
            break
    return (f"non-finite value in {where}; the last good state, step {step}, is kept as the "
            f"final state of {run.writer.partial_path}")


def check_diagnostics(run: Run, values: Mapping[str, Any], stage: str | None) -> None:
    """Stop with NonFiniteError when a diagnostic about to be captured is not finite (a finite
    state may overflow in a reduction); the state it came from becomes the file's final state,
    and the capture is not written."""
    if not values or not run.plan.scenario.check_finite:
        return
    if bool(run.backend.call(all_finite, dict(values))):
        return
    bad = non_finite(run.backend, values)
    after = f" after stage {stage!r} of that step" if stage else ""
    raise NonFiniteError(
        f"non-finite value in diagnostic {bad[0]!r} at step {run.step}{after}; the state of "
        f"step {run.step} is kept as the final state of {run.writer.partial_path}, without this "
        f"capture")
