"""The driver, the only glue: solver + backend + schedules + output file.

It asks the schedules for the next capture, advances the compiled loop exactly that far, takes host
copies of what the streams keep, and hands them to the background writer.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simkit._version import __version__
from simkit.backends import AbstractBackend, get_backend
from simkit.io import BackgroundWriter, NetCDFWriter, schema
from simkit.scenario import RunPlan, StreamPlan
from simkit.schedule import TIME_RTOL
from simkit.solver import make_step

#: Called between segments with (step, time, captures written, steps expected or None).
ProgressFn = Callable[[int, float, int, "int | None"], None]
_PROVENANCE_PACKAGES = ("numpy", "array-api-compat", "xarray", "netCDF4", "pydantic")
_BACKEND_PACKAGES = {"numpy": (), "jax": ("jax", "jaxlib"), "torch": ("torch",)}
#: Segments are cut this many times per run when progress is shown.
_PROGRESS_UPDATES = 100


@dataclass(frozen=True)
class RunResult:
    """What a run produced: the file, and the final state as host arrays."""

    path: Path
    state: dict[str, np.ndarray]
    step: int
    time: float


def _versions(backend: str) -> str:
    versions = {"simkit": __version__}
    for package in _PROVENANCE_PACKAGES + _BACKEND_PACKAGES[backend]:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return json.dumps(versions, sort_keys=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _layout(plan: RunPlan, dtype: str) -> schema.RunLayout:
    solver = plan.solver
    fields = {f.name: schema.VariableSpec(f.name, f.dims, f.units, f.long_name, dtype)
              for f in solver.fields()}
    diagnostics = {d.name: schema.VariableSpec(d.name, (), d.units, d.long_name, "float64")
                   for d in solver.diagnostics()}
    return schema.RunLayout(
        coordinates=tuple(schema.CoordinateSpec(c.name, np.asarray(c.values), c.units,
                                                c.long_name) for c in solver.coordinates()),
        fields=tuple(fields.values()),
        streams=tuple(schema.StreamSpec(s.name, tuple(fields[f] for f in s.fields),
                                        tuple(diagnostics[d] for d in s.diagnostics))
                      for s in plan.streams),
        time_units=solver.time_units,
    )


def steps_to_time(time: float, target: float, dt: float) -> tuple[int, float]:
    """Steps needed to go from ``time`` to ``target`` with step ``dt``, and the length of the last
    one (shortened so the run lands exactly on ``target``)."""
    remaining = target - time
    k = max(1, math.ceil(remaining / dt - TIME_RTOL))
    last = remaining - (k - 1) * dt
    if abs(last - dt) <= TIME_RTOL * dt:
        last = dt
    return k, last


class _Run:
    """The state of one run as it advances."""

    def __init__(self, plan: RunPlan, backend: AbstractBackend, writer: BackgroundWriter) -> None:
        self.plan = plan
        self.backend = backend
        self.writer = writer
        self.step_fn = make_step(plan.solver)
        self.diagnostics = {d.name: d for d in plan.solver.diagnostics()}
        self.step = 0
        self.time = 0.0
        rng = np.random.default_rng(plan.scenario.seed)
        host = plan.solver.initial_state(plan.initial, rng)
        self.fields = {f.name: backend.asarray(host[f.name]) for f in plan.solver.fields()}
        self.last_capture: dict[str, int] = {}

    def capture(self, streams: list[StreamPlan]) -> None:
        """Host copies of what ``streams`` keep at the current step, queued for writing."""
        if not streams:
            return
        field_names = {name for s in streams for name in s.fields}
        diag_names = {name for s in streams for name in s.diagnostics}
        device = {name: self.fields[name] for name in field_names}
        device.update({name: self.diagnostics[name].fn(self.fields) for name in diag_names})
        host = self.backend.to_host(device)
        for stream in streams:
            arrays = {name: host[name] for name in stream.fields + stream.diagnostics}
            self.writer.capture(stream.name, self.step, self.time, arrays)
            self.last_capture[stream.name] = self.step

    def advance(self, n: int, dt: float) -> None:
        if n > 0:
            self.fields = self.backend.advance(self.step_fn, self.fields, n, dt)

    def firing(self, final: bool) -> list[StreamPlan]:
        return [s for s in self.plan.streams
                if self.last_capture.get(s.name) != self.step
                and (s.schedule.fires(self.step, self.time) or (final and s.schedule.at_end))]


def execute(plan: RunPlan, progress: ProgressFn | None = None,
            ) -> RunResult:
    """Run a validated plan to its end, writing its file.

    Args:
        plan: from ``simkit.scenario.plan_run``.
        progress: called between segments; when given, segments are cut so it is called about
            ``_PROGRESS_UPDATES`` times.

    Returns:
        The output path and the final state.
    """
    sc = plan.scenario
    backend = get_backend(sc.backend, sc.device, sc.dtype, compile=sc.compile)
    started = _now()
    attrs = {
        schema.ATTR_TITLE: f"simkit run of {plan.solver.name}",
        schema.ATTR_SOLVER: plan.solver.name,
        schema.ATTR_SOLVER_VERSION: plan.solver.version,
        schema.ATTR_BACKEND: backend.name,
        schema.ATTR_DEVICE: backend.device,
        schema.ATTR_DTYPE: sc.dtype,
        schema.ATTR_SEED: sc.seed,
        schema.ATTR_DT: plan.dt,
        schema.ATTR_SCENARIO: plan.text,
        schema.ATTR_SCENARIO_FILE: plan.source or "",
        schema.ATTR_VERSIONS: _versions(backend.name),
        schema.ATTR_STARTED: started,
    }
    writer = BackgroundWriter(NetCDFWriter(plan.output, _layout(plan, sc.dtype), attrs,
                                           overwrite=plan.overwrite))
    try:
        run = _Run(plan, backend, writer)
        _loop(run, progress)
        host = backend.to_host(run.fields)
        writer.final(run.step, run.time, host)
        path = writer.close({schema.ATTR_FINISHED: _now()})
    except BaseException:
        writer.abort({schema.ATTR_FINISHED: _now()})
        raise
    return RunResult(path=path, state=host, step=run.step, time=run.time)


def _loop(run: _Run, progress: ProgressFn | None) -> None:
    plan, sc, dt = run.plan, run.plan.scenario, run.plan.dt
    end_step, end_time = sc.steps, sc.until
    expected = end_step if end_step is not None else math.ceil(end_time / dt - TIME_RTOL)
    chunk = max(1, expected // _PROGRESS_UPDATES) if progress else None
    schedules = [s.schedule for s in plan.streams]
    run.capture(run.firing(final=expected == 0))
    while not ((end_step is not None and run.step >= end_step)
               or (end_time is not None and run.time >= end_time)):
        step_targets = [s.next_step(run.step) for s in schedules]
        if end_step is not None:
            step_targets.append(end_step)
        n_step = min((t for t in step_targets if t is not None), default=None)
        time_targets = [s.next_time(run.time) for s in schedules] + [end_time]
        target_time = min((t for t in time_targets if t is not None), default=None)
        if chunk is not None:
            cap = run.step + chunk
            n_step = cap if n_step is None else min(n_step, cap)
        k, last = steps_to_time(run.time, target_time, dt) if target_time is not None else (0, dt)
        if target_time is not None and (n_step is None or run.step + k <= n_step):
            run.advance(k - 1, dt)
            run.advance(1, last)
            run.step += k
            run.time = target_time
        else:
            n = n_step - run.step
            run.advance(n, dt)
            run.step += n
            run.time = run.time + n * dt
        final = ((end_step is not None and run.step >= end_step)
                 or (end_time is not None and run.time >= end_time))
        run.capture(run.firing(final))
        if progress:
            progress(run.step, run.time, run.writer.written, expected)
