"""The driver, the only glue: solver + backend + schedules + output file.

It asks the schedules for the next capture, advances the compiled loop exactly that far, takes host
copies of what the streams keep, and hands them to the background writer.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import math
import os
import threading
import time as _time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from simkit._version import __version__
from simkit.backends import AbstractBackend, get_backend
from simkit.driver._blocks import BlockLoop, _is_final, block_steps, build_program
from simkit.driver._captures import Capture, commit_callback
from simkit.errors import NonFiniteError, RunInterrupted, ScenarioError
from simkit.io import BackgroundWriter, NetCDFWriter, schema, stop_request_path
from simkit.scenario import RunPlan, StreamPlan
from simkit.schedule import TIME_RTOL, AbstractSchedule, WallTime, When, While, members
from simkit.solver import KERNELS_ENV, make_step

logger = logging.getLogger(__name__)

#: Called between segments with (step, time, captures written, steps expected or None).
ProgressFn = Callable[[int, float, int, "int | None"], None]
#: Called on the writer thread with each capture once it is on disk.
CaptureFn = Callable[[Capture], None]
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


def provenance(plan: RunPlan, backend: AbstractBackend) -> dict[str, Any]:
    """The root attributes recording what ran, where and when it started."""
    sc = plan.scenario
    return {
        schema.ATTR_TITLE: f"simkit run of {plan.solver.name}",
        schema.ATTR_SOLVER: plan.solver.name,
        schema.ATTR_SOLVER_VERSION: plan.solver.version,
        schema.ATTR_BACKEND: backend.name,
        schema.ATTR_DEVICE: backend.device,
        schema.ATTR_DTYPE: sc.dtype,
        schema.ATTR_SEED: sc.seed,
        schema.ATTR_DT: plan.dt,
        schema.ATTR_SCENARIO: plan.text,
        schema.ATTR_SCENARIO_FILE: str(Path(plan.source).resolve()) if plan.source else "",
        schema.ATTR_VERSIONS: _versions(backend.name),
        schema.ATTR_STARTED: _now(),
    }


def _layout(plan: RunPlan, dtype: str) -> schema.RunLayout:
    solver = plan.solver
    specs = list(solver.fields()) + [p for stage in solver.stages() for p in stage.probes]
    coordinates = {c.name: c for c in solver.coordinates()}
    for kind, spec in [("field", f) for f in specs] + [("diagnostic", d)
                                                       for d in solver.diagnostics()]:
        unknown = [dim for dim in spec.dims if dim not in coordinates]
        if unknown:
            raise ValueError(f"solver {solver.name}: {kind} {spec.name!r}: expected dimensions "
                             f"among the solver's coordinates ({', '.join(coordinates)}), given "
                             f"{spec.dims!r}")
    fields = {f.name: schema.VariableSpec(f.name, f.dims, f.units, f.long_name, dtype)
              for f in specs}
    diagnostics = {d.name: schema.VariableSpec(d.name, d.dims, d.units, d.long_name, "float64")
                   for d in solver.diagnostics()}
    field_names = [f.name for f in solver.fields()]
    slots = tuple(save_schedules(plan))
    return schema.RunLayout(
        coordinates=tuple(schema.CoordinateSpec(c.name, np.asarray(c.values), c.units,
                                                c.long_name) for c in coordinates.values()),
        fields=tuple(fields[f.name] for f in solver.fields()),
        streams=tuple(schema.StreamSpec(s.name, tuple(fields[f] for f in s.fields),
                                        tuple(diagnostics[d] for d in s.diagnostics), s.stage,
                                        slots if is_checkpoint(s, field_names) else ())
                      for s in plan.streams),
        time_units=solver.time_units,
    )


def is_checkpoint(stream: StreamPlan, field_names: list[str]) -> bool:
    """Whether the captures of ``stream`` are checkpoints: full states at the end of a step (a
    stream that captures after a stage holds mid-step states, which a resume must not use)."""
    return stream.stage is None and set(field_names) <= set(stream.fields)


def _check_shape(solver: Any, diagnostic: Any, shape: Any, sizes: Mapping[str, int]) -> None:
    """Refuse a diagnostic value whose shape is not the one its dims declare (the file would
    otherwise keep one value of a vector)."""
    expected, given = tuple(sizes[dim] for dim in diagnostic.dims), tuple(shape)
    if given != expected:
        raise ValueError(f"solver {solver.name}: diagnostic {diagnostic.name!r}: expected shape "
                         f"{expected} from its dims {diagnostic.dims}, given {given}")


def _schedules(plan: RunPlan) -> dict[str, AbstractSchedule]:
    """Every schedule of the run, by the scenario key it came from."""
    found: dict[str, AbstractSchedule] = {f"outputs.{s.name}": s.schedule for s in plan.streams}
    if plan.stop_when is not None:
        found["stop_when"] = plan.stop_when
    return found


def save_schedules(plan: RunPlan) -> dict[str, float]:
    """The state of every schedule of the run (cooldowns, deadlines), flat, by slot name."""
    return {f"{key}.{name}": value for key, schedule in _schedules(plan).items()
            for name, value in schedule.save().items()}


def restore_schedules(plan: RunPlan, state: Mapping[str, float] | None) -> None:
    """Give every schedule of the run the state ``save_schedules`` saved (None: a fresh start).

    Raises:
        ValueError: ``state`` names slots other than the run's.
    """
    schedules = _schedules(plan)
    for schedule in schedules.values():
        schedule.reset()
    if state is None:
        return
    unknown = sorted(set(state) - set(save_schedules(plan)))
    if unknown:
        raise ValueError(f"schedule state: expected slots of this run's schedules "
                         f"({', '.join(save_schedules(plan))}), given {', '.join(unknown)}")
    for key, schedule in schedules.items():
        prefix = f"{key}."
        schedule.restore({name.removeprefix(prefix): value for name, value in state.items()
                          if name.startswith(prefix)})


def _arrays(value: Any) -> list[Any]:
    """The arrays in a state entry: an array, or (as a stage may store) tuples and lists of them;
    Python numbers (the seed) are no data."""
    if isinstance(value, (tuple, list)):
        return [array for item in value for array in _arrays(item)]
    # type(), not isinstance: NumPy's float64 scalars (what a reduction returns) are floats.
    return [] if type(value) in (bool, int, float, complex) or value is None else [value]


def _all_finite(fields: Mapping[str, Any]) -> Any:
    """Whether every array in ``fields`` is finite, as a 0-d bool (on the device); entries may
    be arrays or tuples of arrays."""
    values = [a for value in fields.values() for a in _arrays(value)]
    if not values:
        return True
    xp = array_namespace(*values)
    return xp.all(xp.stack([xp.all(xp.isfinite(v)) for v in values]))


def _finite_flags(state: Mapping[str, Any]) -> dict[str, Any]:
    """``_all_finite`` of each entry of ``state`` apart (one compiled call for a whole state)."""
    return {name: _all_finite({name: value}) for name, value in state.items() if _arrays(value)}


def _non_finite(backend: AbstractBackend, state: Mapping[str, Any]) -> list[str]:
    """The names of the entries of ``state`` holding a NaN or an infinity."""
    flags = backend.call(_finite_flags, dict(state))
    return [name for name, flag in flags.items() if not bool(flag)]


class _HostBuffers:
    """Reusable host buffers for captures: a fresh large array costs page faults on first touch,
    a copy into a buffer that was used before does not. A buffer goes back to the pool once every
    capture holding it has been written."""

    def __init__(self) -> None:
        self._free: dict[tuple, list[np.ndarray]] = {}
        self._users: dict[int, int] = {}
        self._lock = threading.Lock()

    def take(self, like: Any, users: int) -> np.ndarray:
        key = (tuple(like.shape), str(like.dtype).removeprefix("torch."))
        with self._lock:
            free = self._free.get(key)
            buffer = free.pop() if free else None
        if buffer is None:
            buffer = np.empty(key[0], dtype=np.dtype(key[1]))
        with self._lock:
            self._users[id(buffer)] = users
        return buffer

    def give_back(self, arrays: Mapping[str, np.ndarray]) -> None:
        with self._lock:
            for buffer in arrays.values():
                left = self._users.get(id(buffer))
                if left is None:
                    continue
                if left > 1:
                    self._users[id(buffer)] = left - 1
                else:
                    del self._users[id(buffer)]
                    key = (buffer.shape, str(buffer.dtype))
                    self._free.setdefault(key, []).append(buffer)


#: Functions made from a solver (steps, stage steps, diagnostics, watched conditions) by solver
#: class, parameters and what they are, so a process that runs the same solver again (a notebook,
#: a sweep, a benchmark) reuses them and what the backend compiled for them. Backends keep
#: compiled code only while its function lives, so this bound also bounds the memory a long
#: process spends on compiled code: the least recently used go first.
_STEPS: OrderedDict[tuple, Any] = OrderedDict()
_STEPS_KEPT = 32


def _solver_cached(solver: Any, what: tuple, make: Callable[[], Any]) -> Any:
    params = getattr(solver, "params", None)
    if params is None or not hasattr(params, "model_dump_json"):
        return make()
    # The kernel switch changes what a step is made of: part of the key.
    key = (type(solver), params.model_dump_json(), os.environ.get(KERNELS_ENV, ""), *what)
    found = _STEPS.get(key)
    if found is None:
        found = _STEPS[key] = make()
        while len(_STEPS) > _STEPS_KEPT:
            _STEPS.popitem(last=False)
    else:
        _STEPS.move_to_end(key)
    return found


def _step_for(solver: Any, seed: int, capture_after: tuple[str, ...] = ()) -> Any:
    """``make_step(solver, seed, capture_after=...)``, the same function for the same solver."""
    return _solver_cached(solver, ("step", seed, tuple(capture_after)),
                          lambda: make_step(solver, seed, capture_after=capture_after))


def _diagnostics_for(solver: Any) -> dict[str, Any]:
    """The solver's diagnostics by name, the same functions for the same solver (a backend
    compiles each once per process, not once per run)."""
    return _solver_cached(solver, ("diagnostics",),
                          lambda: {d.name: d for d in solver.diagnostics()})


def _watch_for(solver: Any, conditions: tuple[tuple[str, float | None, float | None], ...]
               ) -> Any:
    """The device predicate of the watched conditions ``(diagnostic, above, below)``: a bool
    vector of ``fields``, one entry per condition; the same function for the same conditions."""
    def make() -> Any:
        diagnostics = _diagnostics_for(solver)
        tests = [(diagnostics[name].fn, above, below) for name, above, below in conditions]

        def watch(fields):
            flags = [fn(fields) > above if above is not None else fn(fields) < below
                     for fn, above, below in tests]
            return array_namespace(*flags).stack(flags)

        return watch

    return _solver_cached(solver, ("watch", conditions), make)


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run starts: a checkpointed state and what each stream already holds."""

    step: int
    time: float
    fields: dict[str, np.ndarray] | None  # None: the initial state
    last_capture: dict[str, int]
    #: The schedules' state saved with the checkpoint (None: start them afresh).
    schedules: dict[str, float] | None = None


class _Run:
    """The state of one run as it advances."""

    def __init__(self, plan: RunPlan, backend: AbstractBackend, writer: BackgroundWriter,
                 buffers: _HostBuffers, resume: ResumePoint | None = None) -> None:
        self.plan = plan
        self.backend = backend
        self.writer = writer
        seed = plan.scenario.seed
        self.step_fn = _step_for(plan.solver, seed)
        self.buffers = buffers
        self.diagnostics = _diagnostics_for(plan.solver)
        self.sizes = {c.name: len(c.values) for c in plan.solver.coordinates()}
        field_names = [f.name for f in plan.solver.fields()]
        self.checkpoints = {s.name for s in plan.streams if is_checkpoint(s, field_names)}
        self.state_slots = tuple(save_schedules(plan))
        self.step = 0
        self.time = 0.0
        rng = np.random.default_rng(seed)
        host = plan.solver.initial_state(plan.initial, rng)
        self.dims = {f.name: f.dims for f in plan.solver.fields()}
        self.fields = {name: backend.place(host[name], dims) for name, dims in self.dims.items()}
        self.last_capture: dict[str, int] = {}
        self.plain = [s for s in plan.streams if s.stage is None]
        self.staged = [s for s in plan.streams if s.stage is not None]
        # Conditions and wall-clock captures happen between blocks, at a block's last step;
        # a stage stream's capture then retakes that step stage by stage.
        self.whens = [(s, m) for s in plan.streams for m in members(s.schedule)
                      if isinstance(m, When)]
        if plan.stop_when is not None:
            self.whens.append((None, plan.stop_when))  # ends the run instead of capturing
        self.stopped = False
        self.walls = [(s, m) for s in plan.streams for m in members(s.schedule)
                      if isinstance(m, WallTime)]
        # The schedules keep their own state (cooldowns, deadlines); a resume gives them back
        # the state saved with its checkpoint, so they capture what an uninterrupted run would.
        saved = None
        if resume is not None:
            self.step, self.time = resume.step, resume.time
            if resume.fields is not None:
                self.fields = {name: backend.place(value, self.dims[name])
                               for name, value in resume.fields.items()}
                saved = resume.schedules
                if saved is None and self.state_slots:
                    logger.warning("the checkpoint at step %d holds no schedule state: cooldowns "
                                   "and wall-clock schedules start afresh", resume.step)
            self.last_capture = dict(resume.last_capture)
        restore_schedules(plan, saved)
        self.watch = self._make_watch() if self.whens else None
        # The step rate that sizes segments before a wall-clock capture counts this process's
        # steps only (a resumed run starts at its checkpoint's step).
        self.wall_started, self.wall_start_step = _time.perf_counter(), self.step
        self.checked_at = self.step

    def _make_watch(self):
        return _watch_for(self.plan.solver,
                          tuple((m.diagnostic, m.above, m.below) for _, m in self.whens))

    # -------------------------------------------------------------- captures

    def capture(self, streams: list[StreamPlan], source: Mapping[str, Any] | None = None
                ) -> None:
        """Host copies of what ``streams`` keep, from the fields (or a mid-step ``source``),
        queued for writing: the captures that happen between blocks (the state a run starts
        from, a condition that fired, a wall-clock capture)."""
        if not streams:
            return
        state = self.fields if source is None else source
        # In a fixed order (not a set's, which differs between processes): every process of a
        # multi-process run must compute and gather the same values in the same order.
        field_names = list(dict.fromkeys(name for s in streams for name in s.fields))
        diag_names = list(dict.fromkeys(name for s in streams for name in s.diagnostics))
        device = {name: state[name] for name in field_names}
        device.update({name: self.backend.call(self.diagnostics[name].fn, state)
                       for name in diag_names})
        self.check_diagnostics({name: device[name] for name in diag_names},
                               streams[0].stage if source is not None else None)
        for name in diag_names:
            _check_shape(self.plan.solver, self.diagnostics[name],
                         getattr(device[name], "shape", ()), self.sizes)
        for stream in streams:
            self.last_capture[stream.name] = self.step
        schedules = None
        if self.state_slots and any(s.name in self.checkpoints for s in streams):
            saved = save_schedules(self.plan)
            schedules = np.array([saved[slot] for slot in self.state_slots], dtype=np.float64)
        users = {name: sum(name in s.fields for s in streams) for name in device}
        out = {name: self.buffers.take(device[name], users[name])
               for name in device if users[name]}
        host = self.backend.to_host(device, out)
        for stream in streams:
            arrays = {name: host[name] for name in stream.fields + stream.diagnostics}
            if schedules is not None and stream.name in self.checkpoints:
                arrays[schema.SCHEDULE_STATE] = schedules
            self.writer.capture(stream.name, self.step, self.time, arrays)

    def due(self, streams: list[StreamPlan], step: int, time: float, final: bool
            ) -> list[StreamPlan]:
        """The streams that capture the current state (at ``step``) on the host path; a
        level-triggered stream only while its condition holds."""
        return [s for s in streams if self.last_capture.get(s.name) != step
                and (s.schedule.fires(step, time) or (final and s.schedule.at_end))
                and (not isinstance(s.schedule, While) or self._holds(s.schedule))]

    def _holds(self, condition: While) -> bool:
        value = self.backend.call(self.diagnostics[condition.diagnostic].fn, self.fields)
        return condition.holds(float(self.backend.to_host({"v": value})["v"]))

    # -------------------------------------------------------------- stepping

    def check_finite(self, start: dict[str, Any], start_step: int, pieces: list[Any]) -> None:
        """Stop with NonFiniteError naming step, stage and field if the state is not finite."""
        self.checked_at = self.step
        if bool(self.backend.call(_all_finite, self.fields)):
            return
        # Replay from the block's start one step at a time with the run's own step function
        # (compiled once, as every function below), then stage by stage at the first step whose
        # result is not finite. Times are computed as the block computed them.
        fields, step = start, start_step
        for dt, time in block_steps(pieces):
            new = self.backend.call_step(self.step_fn, fields, dt, step, time)
            if not bool(self.backend.call(_all_finite, new)):
                self.fields, self.step, self.time = fields, step, time
                raise NonFiniteError(self._locate(fields, dt, step, time))
            fields, step = new, step + 1
        raise NonFiniteError(f"non-finite value at step {self.step}; the stage could not be "
                             "found by replay")

    def _locate(self, fields: dict[str, Any], dt: float, step: int, time: float) -> str:
        """The message naming the first stage of the step from ``fields`` after which a value
        is not finite, and the entry (field or intermediate) holding it."""
        seed = self.plan.scenario.seed
        where = f"step {step + 1} (time {time + dt:g})"
        for stage in self.plan.solver.stages():
            _, seen = self.backend.call_step(_step_for(self.plan.solver, seed, (stage.name,)),
                                             fields, dt, step, time)
            bad = _non_finite(self.backend, seen[stage.name])
            if bad:
                where = f"field {bad[0]!r} after stage {stage.name!r} of {where}"
                break
        return (f"non-finite value in {where}; the last good state, step {step}, is kept as the "
                f"final state of {self.writer.partial_path}")

    def check_diagnostic_shapes(self, names: set[str], state: Mapping[str, Any] | None = None
                                ) -> None:
        """Refuse a diagnostic whose value has another shape than its dims declare, before any
        block stores it (evaluated once, on the state the run starts from or ``state``)."""
        for name in sorted(names):
            value = self.backend.call(self.diagnostics[name].fn,
                                      self.fields if state is None else state)
            _check_shape(self.plan.solver, self.diagnostics[name], getattr(value, "shape", ()),
                         self.sizes)

    def check_start(self) -> None:
        """Stop with NonFiniteError when the state the run starts from (its initial condition or
        a checkpoint) is not finite, before any of it is written as data."""
        bad = _non_finite(self.backend, self.fields)
        if bad:
            raise NonFiniteError(
                f"non-finite value in field {bad[0]!r} of the state at step {self.step}, where the "
                f"run starts (its initial condition, or the checkpoint it resumes from); nothing "
                f"was computed from it")

    def check_diagnostics(self, values: Mapping[str, Any], stage: str | None) -> None:
        """Stop with NonFiniteError when a diagnostic about to be captured is not finite (a
        finite state may overflow in a reduction); the state it came from becomes the file's
        final state, and the capture is not written."""
        if not values or not self.plan.scenario.check_finite:
            return
        if bool(self.backend.call(_all_finite, dict(values))):
            return
        bad = _non_finite(self.backend, values)
        after = f" after stage {stage!r} of that step" if stage else ""
        raise NonFiniteError(
            f"non-finite value in diagnostic {bad[0]!r} at step {self.step}{after}; the state "
            f"of step {self.step} is kept as the final state of "
            f"{self.writer.partial_path}, without this capture")


def execute(plan: RunPlan, progress: ProgressFn | None = None,
            resume: ResumePoint | None = None, on_capture: CaptureFn | None = None,
            stop: threading.Event | None = None) -> RunResult:
    """Run a validated plan to its end, writing its file.

    Args:
        plan: from ``simkit.scenario.plan_run``.
        progress: called between segments; when given, segments are cut so it is called about
            ``_PROGRESS_UPDATES`` times.
        resume: continue the existing file at ``plan.output`` from this point.
        on_capture: called with every capture once it is on disk (on the writer thread).
        stop: when set, the run stops at the next block boundary as on Ctrl-C (so does a
            ``simkit stop`` of its file: see ``simkit.io.request_stop``).

    Returns:
        The output path and the final state.

    Raises:
        NonFiniteError: the state turned NaN or infinite; the file keeps the captures so far and
            the last good state as its final state.
    """
    sc = plan.scenario
    options = {"mesh": plan.mesh} if plan.mesh else {}
    backend = get_backend(sc.backend, sc.device, sc.dtype, compile=sc.compile, **options)
    if backend.process_count > 1:
        _check_processes(plan, backend.process_count)
    if backend.process_index:  # one of several processes of a run: process 0 writes the file
        return _execute_silent(plan, backend, progress, resume)
    attrs = provenance(plan, backend)
    if resume is not None:
        # The file holds every capture up to the checkpoint, none after it.
        attrs = {schema.ATTR_RESUMED: _now(), schema.ATTR_DEVICE: backend.device,
                 schema.ATTR_COMMITTED: np.int64(resume.step if resume.fields is not None
                                                 else -1)}
    buffers = _HostBuffers()
    writer = BackgroundWriter(NetCDFWriter(plan.output, _layout(plan, sc.dtype), attrs,
                                           overwrite=plan.overwrite, append=resume is not None),
                              on_written=lambda stream, step, arrays: buffers.give_back(arrays),
                              on_committed=(commit_callback(plan, on_capture)
                                            if on_capture is not None else None))
    logger.info("%s %s on %s (%s, %s) -> %s", "resuming" if resume else "running",
                plan.solver.name, backend.name, backend.device, sc.dtype, plan.output)
    run = None
    try:
        run = _Run(plan, backend, writer, buffers, resume)
        _loop(run, progress, _stop_check(plan.output, stop))
        host = backend.to_host(run.fields)
        writer.final(run.step, run.time, host)
        path = writer.close({schema.ATTR_FINISHED: _now()})
        logger.info("finished at step %d, time %g; %d captures written", run.step, run.time,
                    writer.written)
    except NonFiniteError as error:
        writer.final(run.step, run.time, backend.to_host(run.fields))
        writer.abort(failed(error, schema.STATUS_NON_FINITE))
        raise
    except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM/SIGHUP turned into one by the CLI
        kept = writer.abort({schema.ATTR_FINISHED: _now(),
                             schema.ATTR_STATUS: schema.STATUS_INTERRUPTED})
        raise RunInterrupted(str(error) or "SIGINT", kept) from error
    except BaseException as error:
        kept = writer.abort(failed(error))
        if Path(kept) != Path(plan.output):  # a run that was to replace a file
            logger.error("the run so far is kept in %s", kept)
        raise
    return RunResult(path=path, state=host, step=run.step, time=run.time)


def _check_processes(plan: RunPlan, count: int) -> None:
    """Refuse what several processes cannot agree on: each plans the same blocks, so a schedule
    may not depend on its own clock."""
    for stream in plan.streams:
        if any(isinstance(m, WallTime) for m in members(stream.schedule)):
            raise ScenarioError(f"expected schedules of steps or simulated time in a run of "
                                f"{count} processes (each has its own clock), given wall_time",
                                key=f"outputs.{stream.name}")


class _NoFile:
    """The writer of a process other than process 0 in a multi-process run: it computes and
    gathers every capture with the others (their collectives need it) and writes nothing."""

    written = 0

    def __init__(self, path: Path, done: Callable[[Any], None]) -> None:
        self.partial_path = path
        self._done = done

    def capture(self, stream: str, step: int, time: float, arrays: Any) -> None:
        self.written += 1
        self._done(arrays)

    def capture_block(self, stream: str, steps: list[int], times: list[float], arrays: Any
                      ) -> None:
        self.written += len(steps)

    def committed(self, step: int) -> None:
        pass

    def final(self, step: int, time: float, arrays: Any) -> None:
        pass


def _execute_silent(plan: RunPlan, backend: AbstractBackend, progress: ProgressFn | None,
                    resume: ResumePoint | None) -> RunResult:
    """``execute`` on a process that writes no file (see ``_NoFile``)."""
    buffers = _HostBuffers()
    writer = _NoFile(plan.output, buffers.give_back)
    run = _Run(plan, backend, writer, buffers, resume)  # type: ignore[arg-type]
    _loop(run, progress)
    return RunResult(path=plan.output, state=backend.to_host(run.fields), step=run.step,
                     time=run.time)


def failed(error: BaseException, status: str = schema.STATUS_FAILED) -> dict[str, str]:
    """The attributes that close the file of a run stopped by ``error``."""
    message = " ".join(f"{type(error).__name__}: {error}".split())
    return {schema.ATTR_FINISHED: _now(), schema.ATTR_STATUS: status,
            schema.ATTR_ERROR: message}


def _stop_check(output: Path, stop: threading.Event | None) -> Callable[[], str | None]:
    """What asks the run to stop at a block boundary: ``stop`` set (by ``simkit.iterate``), or a
    stop request beside the output file (``simkit stop``), taken back when seen."""
    request = stop_request_path(output)
    if request.exists():  # left by an earlier run of this file: not meant for this one
        request.unlink(missing_ok=True)

    def check() -> str | None:
        if stop is not None and stop.is_set():
            return "a stop request"
        if request.exists():
            request.unlink(missing_ok=True)
            return "simkit stop"
        return None

    return check


def _loop(run: _Run, progress: ProgressFn | None,
          stop_requested: Callable[[], str | None] = lambda: None) -> None:
    """Run blocks until the run ends: each block is one call of the backend, capturing on the
    device; only what happens between blocks (a condition that fired, a wall-clock capture)
    takes the host path."""
    sc, dt = run.plan.scenario, run.plan.dt
    expected = sc.steps if sc.steps is not None else math.ceil(sc.until / dt - TIME_RTOL)
    chunk = max(1, expected // _PROGRESS_UPDATES) if progress else None
    if sc.check_finite:
        run.check_start()
    run.capture(run.due(run.plain, run.step, run.time, final=_is_final(sc, run.step, run.time)))
    program, runner = build_program(run, _step_for, _watch_for, _solver_cached)
    blocks = BlockLoop(run, program, runner, sc.flush_seconds, chunk)
    while not (run.stopped or _is_final(sc, run.step, run.time)):
        fired = blocks.run_block()
        streams: list[StreamPlan] = []
        if fired is not None:
            run.stopped = any(run.whens[j][0] is None for j in np.flatnonzero(fired))
            final = run.stopped or _is_final(sc, run.step, run.time)
            streams = run.due(run.plain, run.step, run.time, final)
            for j in np.flatnonzero(fired):
                stream, when = run.whens[j]
                when.fired(run.step)
                if (stream is not None and stream not in streams
                        and run.last_capture.get(stream.name) != run.step):
                    streams.append(stream)
        if run.walls:
            for stream, wall in run.walls:
                if wall.due():
                    wall.fired()
                    blocks.drop_plan()
                    if stream not in streams and run.last_capture.get(stream.name) != run.step:
                        streams.append(stream)
        run.capture([s for s in streams if s.stage is None])
        staged = [s for s in streams if s.stage is not None]
        if run.stopped:  # the last captures of stage streams (`last: true`)
            staged += [s for s in run.staged if s.schedule.at_end and s not in staged
                       and run.last_capture.get(s.name) != run.step]
        _capture_at_stages(run, blocks, staged)
        run.writer.committed(run.step)  # every capture due up to here is queued
        if progress:
            if sc.until is not None:  # shortened steps onto capture times add to the count
                expected = run.step + max(0, math.ceil((sc.until - run.time) / dt - TIME_RTOL))
            progress(run.step, run.time, run.writer.written, expected)
        reason = stop_requested()
        if run.backend.process_count > 1:  # every process stops at the same block
            reason = "simkit stop" if run.backend.agree(1.0 if reason else 0.0) else None
        if reason is not None and not _is_final(sc, run.step, run.time) and not run.stopped:
            raise KeyboardInterrupt(reason)


def _capture_at_stages(run: _Run, blocks: BlockLoop, streams: list[StreamPlan]) -> None:
    """Captures of stage streams at the step a block ended on, which no block planned as a
    capture (a condition fired there, a wall-clock capture fell due, a condition ended the run):
    that step is retaken stage by stage from the block's start."""
    if not streams or not blocks.has_taken_steps():
        return
    stages = tuple(dict.fromkeys(s.stage for s in streams))
    seen = blocks.last_step_stages(_step_for(run.plan.solver, run.plan.scenario.seed, stages))
    for stage in stages:
        run.capture([s for s in streams if s.stage == stage], source=seen[stage])


# The ensemble loop builds on the run loop above, so it is imported after it.
from simkit.driver._ensemble import check_vectorizable, execute_ensemble  # noqa: E402

__all__ = ["Capture", "CaptureFn", "ProgressFn", "ResumePoint", "RunResult",
           "check_vectorizable", "execute", "execute_ensemble", "is_checkpoint", "provenance",
           "restore_schedules", "save_schedules"]
