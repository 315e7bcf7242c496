"""Captures on the host path and as handed to callers: the captures taken between blocks (the
state a run starts from, a condition that fired, a wall-clock capture) into reusable host
buffers, the shape checks of what they store, and the ``Capture`` a caller gets once one is on
disk (``simkit.iterate``, ``simkit.run(on_capture=...)``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from simkit.driver._replay import check_diagnostics
from simkit.driver._run import Run, schedule_state
from simkit.errors import ScenarioError
from simkit.io import schema
from simkit.scenario import RunPlan, StreamPlan
from simkit.solver import AbstractSolver, Diagnostic


@dataclasses.dataclass(frozen=True)
class Capture:
    """One capture, as the run committed it to its file.

    Args:
        stream: the stream's name.
        step: the step index.
        time: the simulated time.
        values: host copies (NumPy) of what the stream keeps, by name.
        dims: each value's dimensions, by name (as in the file, without ``step``).
    """

    stream: str
    step: int
    time: float
    values: dict[str, np.ndarray]
    dims: dict[str, tuple[str, ...]]

    def to_xarray(self) -> Any:
        """The capture as an ``xarray.Dataset`` with scalar ``step`` and ``time`` coordinates."""
        import xarray as xr

        return xr.Dataset({name: (self.dims[name], value) for name, value in self.values.items()},
                          coords={schema.STEP: self.step, schema.TIME: self.time},
                          attrs={"stream": self.stream})


def commit_callback(plan: RunPlan, deliver: Callable[[Capture], None]
                    ) -> Callable[[str, list[int], list[float], Mapping[str, np.ndarray], bool],
                                  None]:
    """The writer's commit callback (see ``BackgroundWriter``) that hands ``deliver`` every
    committed capture as a ``Capture`` of host copies (the writer's arrays are reused)."""
    dims = plan.dims

    def on_commit(stream: str, steps: list[int], times: list[float], arrays: Mapping[str, np.ndarray],
                  stacked: bool) -> None:
        kept = {name: value for name, value in arrays.items() if name in dims}
        for i, (step, time) in enumerate(zip(steps, times, strict=True)):
            values = {name: np.array(value[i] if stacked else value, copy=True)
                      for name, value in kept.items()}
            deliver(Capture(stream, int(step), float(time), values,
                            {name: dims[name] for name in values}))

    return on_commit


def check_shape(solver: AbstractSolver, diagnostic: Diagnostic, shape: tuple[int, ...],
                sizes: Mapping[str, int]) -> None:
    """Refuse a diagnostic value whose shape is not the one its dims declare (the file would
    otherwise keep one value of a vector)."""
    expected, given = tuple(sizes[dim] for dim in diagnostic.dims), tuple(shape)
    if given != expected:
        raise ValueError(f"solver {solver.name}: diagnostic {diagnostic.name!r}: expected shape "
                         f"{expected} from its dims {diagnostic.dims}, given {given}")


def check_diagnostic_shapes(run: Run, names: set[str], state: Mapping[str, Any] | None = None,
                            stage: str | None = None) -> None:
    """Refuse a diagnostic whose value has another shape than its dims declare, before any block
    stores it (evaluated once, on the state the run starts from or ``state``)."""
    given = run.fields if state is None else state
    for name in sorted(names):
        try:
            value = run.backend.call(run.diagnostics[name].fn, given)
        except KeyError as error:
            where = "at the end of a step" if stage is None else f"right after stage {stage!r}"
            raise ScenarioError(
                f"expected the values diagnostic {name!r} reads in the state {where}, given one "
                f"without {error.args[0]!r} (it holds {', '.join(map(str, given))})") from None
        check_shape(run.plan.solver, run.diagnostics[name], getattr(value, "shape", ()),
                    run.sizes)


def capture(run: Run, streams: list[StreamPlan], source: Mapping[str, Any] | None = None
            ) -> None:
    """Host copies of what ``streams`` keep, from the run's fields (or a mid-step ``source``),
    queued for writing."""
    if not streams:
        return
    state = run.fields if source is None else source
    # In a fixed order (not a set's, which differs between processes): every process of a
    # multi-process run must compute and gather the same values in the same order.
    field_names = list(dict.fromkeys(name for s in streams for name in s.fields))
    diag_names = list(dict.fromkeys(name for s in streams for name in s.diagnostics))
    device = {name: state[name] for name in field_names}
    device.update({name: run.backend.call(run.diagnostics[name].fn, state)
                   for name in diag_names})
    check_diagnostics(run, {name: device[name] for name in diag_names},
                      streams[0].stage if source is not None else None)
    for name in diag_names:
        check_shape(run.plan.solver, run.diagnostics[name], getattr(device[name], "shape", ()),
                    run.sizes)
    for stream in streams:
        run.last_capture[stream.name] = run.step
    schedules = (schedule_state(run) if any(s.name in run.checkpoints for s in streams)
                 else None)
    users = {name: sum(name in s.fields for s in streams) for name in device}
    out = {name: run.buffers.take(device[name], users[name]) for name in device if users[name]}
    host = run.backend.to_host(device, out)
    captures: list[tuple[str, int, float, Mapping[str, np.ndarray]]] = []
    for stream in streams:
        arrays = {name: host[name] for name in stream.fields + stream.diagnostics}
        if schedules is not None and stream.name in run.checkpoints:
            arrays[schema.SCHEDULE_STATE] = schedules
        captures.append((stream.name, run.step, run.time, arrays))
    run.writer.capture_many(captures)  # one write, one sync, whatever the number of streams


def due(run: Run, streams: list[StreamPlan], step: int, time: float, final: bool,
        stages: Callable[[str], Mapping[str, Any] | None] = lambda stage: None
        ) -> list[StreamPlan]:
    """The streams that capture the run's current state (at ``step``) on the host path, as
    their schedules say (a level-triggered one only while its condition holds: ``stages(name)``
    is the state right after that stage of the step that led here, None where no step did);
    edge conditions and wall clocks are the loop's, not asked here."""
    value = run.level_value(stages)
    found = []
    for s in streams:
        if run.last_capture.get(s.name) == step:
            continue
        schedule, state = s.schedule, run.schedule_states[f"outputs.{s.name}"]
        watched = any(m.edge is not None or m.wall_clock is not None
                      for m in schedule.members())
        if (schedule.fires_at(step, time, final) if watched
                else schedule.due(state, step, time, value) or (final and schedule.at_end)):
            found.append(s)
    return found
