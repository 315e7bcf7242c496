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
import threading
import time as _time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from simkit._version import __version__
from simkit.backends import AbstractBackend, get_backend
from simkit.errors import NonFiniteError, ScenarioError
from simkit.io import BackgroundWriter, NetCDFWriter, schema
from simkit.scenario import RunPlan, StreamPlan
from simkit.schedule import TIME_RTOL, WallTime, When, members
from simkit.solver import SEED_KEY, STEP_KEY, TIME_KEY, make_step

logger = logging.getLogger(__name__)

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
        schema.ATTR_SCENARIO_FILE: plan.source or "",
        schema.ATTR_VERSIONS: _versions(backend.name),
        schema.ATTR_STARTED: _now(),
    }


def _layout(plan: RunPlan, dtype: str) -> schema.RunLayout:
    solver = plan.solver
    specs = list(solver.fields()) + [p for stage in solver.stages() for p in stage.probes]
    fields = {f.name: schema.VariableSpec(f.name, f.dims, f.units, f.long_name, dtype)
              for f in specs}
    diagnostics = {d.name: schema.VariableSpec(d.name, (), d.units, d.long_name, "float64")
                   for d in solver.diagnostics()}
    return schema.RunLayout(
        coordinates=tuple(schema.CoordinateSpec(c.name, np.asarray(c.values), c.units,
                                                c.long_name) for c in solver.coordinates()),
        fields=tuple(fields[f.name] for f in solver.fields()),
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


def _all_finite(fields: Mapping[str, Any]) -> Any:
    values = list(fields.values())
    xp = array_namespace(*values)
    return xp.all(xp.stack([xp.all(xp.isfinite(v)) for v in values]))


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


#: Step functions by (solver class, parameters, seed, stage), so a process that runs the same
#: solver again (a notebook, a sweep, a benchmark) reuses what the backend compiled for it.
_STEPS: dict[tuple, Any] = {}
_STEPS_KEPT = 32


def _step_for(solver: Any, seed: int, until_stage: str | None = None) -> Any:
    params = getattr(solver, "params", None)
    if params is None or not hasattr(params, "model_dump_json"):
        return make_step(solver, seed, until_stage=until_stage)
    key = (type(solver), params.model_dump_json(), seed, until_stage)
    if key not in _STEPS:
        if len(_STEPS) >= _STEPS_KEPT:
            _STEPS.pop(next(iter(_STEPS)))
        _STEPS[key] = make_step(solver, seed, until_stage=until_stage)
    return _STEPS[key]


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run starts: a checkpointed state and what each stream already holds."""

    step: int
    time: float
    fields: dict[str, np.ndarray] | None  # None: the initial state
    last_capture: dict[str, int]


@dataclass
class _Segment:
    """What the next stretch of steps does: ``pieces`` of (count, dt), ending at ``step``/``time``
    unless a watched condition stops it early; ``staged`` streams capture inside its last step."""

    pieces: list[tuple[int, float]]
    step: int
    time: float
    staged: list[StreamPlan]


class _Run:
    """The state of one run as it advances."""

    def __init__(self, plan: RunPlan, backend: AbstractBackend, writer: BackgroundWriter,
                 buffers: _HostBuffers, resume: ResumePoint | None = None) -> None:
        self.plan = plan
        self.backend = backend
        self.writer = writer
        seed = plan.scenario.seed
        self.step_fn = _step_for(plan.solver, seed)
        self.stage_fns = {s.stage: _step_for(plan.solver, seed, s.stage)
                          for s in plan.streams if s.stage is not None}
        self.buffers = buffers
        self.diagnostics = {d.name: d for d in plan.solver.diagnostics()}
        self.step = 0
        self.time = 0.0
        rng = np.random.default_rng(seed)
        host = plan.solver.initial_state(plan.initial, rng)
        self.fields = {f.name: backend.asarray(host[f.name]) for f in plan.solver.fields()}
        self.last_capture: dict[str, int] = {}
        self._pending: tuple | None = None
        self.plain = [s for s in plan.streams if s.stage is None]
        self.staged = [s for s in plan.streams if s.stage is not None]
        self.whens = [(s, m) for s in self.plain for m in members(s.schedule)
                      if isinstance(m, When)]
        if plan.stop_when is not None:
            self.whens.append((None, plan.stop_when))  # ends the run instead of capturing
        self.stopped = False
        self.walls = [(s, m) for s in self.plain for m in members(s.schedule)
                      if isinstance(m, WallTime)]
        self.cooldown_until = [0] * len(self.whens)
        if resume is not None:
            self.step, self.time = resume.step, resume.time
            if resume.fields is not None:
                self.fields = {name: backend.asarray(value)
                               for name, value in resume.fields.items()}
            self.last_capture = dict(resume.last_capture)
            self.cooldown_until = [self.last_capture[s.name] + m.cooldown + 1
                                   if s is not None and s.name in self.last_capture else 0
                                   for s, m in self.whens]
        self.watch = self._make_watch() if self.whens else None
        started = _time.perf_counter()
        self.wall_started = started
        self.wall_due = [started + m.seconds for _, m in self.walls]
        self.checked_at = self.step

    def _make_watch(self):
        conditions = [(self.diagnostics[m.diagnostic].fn, m.above, m.below) for _, m in self.whens]

        def watch(fields):
            flags = []
            for fn, above, below in conditions:
                value = fn(fields)
                flags.append(value > above if above is not None else value < below)
            return array_namespace(*flags).stack(flags)

        return watch

    # -------------------------------------------------------------- captures

    def capture(self, streams: list[StreamPlan], source: Mapping[str, Any] | None = None,
                defer: bool = False) -> None:
        """Host copies of what ``streams`` keep, from the fields (or a mid-step ``source``).

        With ``defer`` on a backend that dispatches asynchronously, only the device values are
        taken now (immutable arrays); the host copy is made by ``flush`` after the next segment
        has been dispatched, so the device computes while the host copies.
        """
        self.flush()
        if not streams:
            return
        state = self.fields if source is None else source
        field_names = {name for s in streams for name in s.fields}
        diag_names = {name for s in streams for name in s.diagnostics}
        device = {name: state[name] for name in field_names}
        device.update({name: self.backend.call(self.diagnostics[name].fn, state)
                       for name in diag_names})
        for stream in streams:
            self.last_capture[stream.name] = self.step
        self._pending = (streams, self.step, self.time, device)
        if not (defer and self.backend.name == "jax"):
            self.flush()

    def flush(self) -> None:
        """Copy a deferred capture to host buffers and queue it for writing."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        streams, step, time, device = pending
        users = {name: sum(name in s.fields for s in streams) for name in device}
        out = {name: self.buffers.take(device[name], users[name])
               for name in device if users[name]}
        host = self.backend.to_host(device, out)
        for stream in streams:
            arrays = {name: host[name] for name in stream.fields + stream.diagnostics}
            self.writer.capture(stream.name, step, time, arrays)

    def due(self, streams: list[StreamPlan], step: int, time: float, final: bool
            ) -> list[StreamPlan]:
        return [s for s in streams if self.last_capture.get(s.name) != step
                and (s.schedule.fires(step, time) or (final and s.schedule.at_end))]

    # -------------------------------------------------------------- stepping

    def run_pieces(self, segment: _Segment) -> np.ndarray | None:
        """Advance through ``segment``; returns the watched conditions that fired, if any."""
        enabled = np.array([self.step >= until for until in self.cooldown_until], dtype=bool)
        watch = self.watch if enabled.any() else None
        last_index = len(segment.pieces) - 1
        for index, (count, dt) in enumerate(segment.pieces):
            if count == 0:
                continue
            staged_step = index == last_index and segment.staged
            n = count - 1 if staged_step else count
            if n:
                self.fields, taken, fired = self.backend.advance(
                    self.step_fn, self.fields, n, dt, self.step, self.time, watch, enabled)
                self.step += taken
                self.time = self.time + taken * dt
                if fired is not None and fired.any():
                    return fired
            if staged_step:
                self.staged_step(segment.staged, dt, segment)
        self.time = segment.time
        return None

    def staged_step(self, streams: list[StreamPlan], dt: float, segment: _Segment) -> None:
        """One step that also captures the state after the streams' stages."""
        seen: dict[str, Any] = {}
        for stage in dict.fromkeys(s.stage for s in streams):
            new, seen[stage] = self.backend.call(self.stage_fns[stage], self.fields, dt,
                                                 self.step, self.time)
        self.fields = new
        self.step += 1
        self.time = segment.time
        for stream in streams:
            self.capture([stream], seen[stream.stage])

    def check_finite(self, start: dict[str, Any], start_step: int, start_time: float,
                     pieces: list[tuple[int, float]]) -> None:
        """Stop with NonFiniteError naming step, stage and field if the state is not finite."""
        self.checked_at = self.step
        if bool(self.backend.call(_all_finite, self.fields)):
            return
        # Replay from the segment's start one step at a time, then stage by stage.
        fields, step, time = start, start_step, start_time
        dts = [dt for count, dt in pieces for _ in range(count)]
        seed = self.plan.scenario.seed
        for dt in dts:
            state = {**fields, STEP_KEY: step, TIME_KEY: time, SEED_KEY: seed}
            for stage in self.plan.solver.stages():
                state = self.backend.call(stage.fn, state, dt)
                bad = [name for name, value in state.items()
                       if name not in (STEP_KEY, TIME_KEY, SEED_KEY)
                       and not bool(self.backend.call(_all_finite, {name: value}))]
                if bad:
                    self.fields, self.step, self.time = fields, step, time
                    raise NonFiniteError(
                        f"non-finite value in field {bad[0]!r} after stage {stage.name!r} of "
                        f"step {step + 1} (time {time + dt:g}); the last good state, step "
                        f"{step}, is kept as the final state of {self.plan.output}")
            fields = {name: state[name] for name in fields}
            step, time = step + 1, time + dt
        raise NonFiniteError(f"non-finite value at step {self.step}; the stage could not be "
                             "found by replay")


def execute(plan: RunPlan, progress: ProgressFn | None = None,
            resume: ResumePoint | None = None) -> RunResult:
    """Run a validated plan to its end, writing its file.

    Args:
        plan: from ``simkit.scenario.plan_run``.
        progress: called between segments; when given, segments are cut so it is called about
            ``_PROGRESS_UPDATES`` times.
        resume: continue the existing file at ``plan.output`` from this point.

    Returns:
        The output path and the final state.

    Raises:
        NonFiniteError: the state turned NaN or infinite; the file keeps the captures so far and
            the last good state as its final state.
    """
    sc = plan.scenario
    backend = get_backend(sc.backend, sc.device, sc.dtype, compile=sc.compile)
    attrs = provenance(plan, backend)
    if resume is not None:
        attrs = {schema.ATTR_RESUMED: _now(), schema.ATTR_DEVICE: backend.device}
    buffers = _HostBuffers()
    writer = BackgroundWriter(NetCDFWriter(plan.output, _layout(plan, sc.dtype), attrs,
                                           overwrite=plan.overwrite, append=resume is not None),
                              on_written=lambda stream, step, arrays: buffers.give_back(arrays))
    logger.info("%s %s on %s (%s, %s) -> %s", "resuming" if resume else "running",
                plan.solver.name, backend.name, backend.device, sc.dtype, plan.output)
    run = None
    try:
        run = _Run(plan, backend, writer, buffers, resume)
        _loop(run, progress)
        host = backend.to_host(run.fields)
        writer.final(run.step, run.time, host)
        path = writer.close({schema.ATTR_FINISHED: _now()})
        logger.info("finished at step %d, time %g; %d captures written", run.step, run.time,
                    writer.written)
    except NonFiniteError:
        writer.final(run.step, run.time, backend.to_host(run.fields))
        writer.abort({schema.ATTR_FINISHED: _now(), schema.ATTR_STATUS: "non-finite"})
        raise
    except BaseException:
        writer.abort({schema.ATTR_FINISHED: _now()})
        raise
    return RunResult(path=path, state=host, step=run.step, time=run.time)


def _plan_segment(run: _Run, chunk: int | None) -> _Segment:
    """The next stretch of steps: up to the nearest capture, time target, cooldown end, check or
    progress update."""
    plan, sc, dt = run.plan, run.plan.scenario, run.plan.dt
    schedules = [s.schedule for s in plan.streams]
    step_targets = [s.next_step(run.step) for s in schedules]
    step_targets += [until for until in run.cooldown_until if until > run.step]
    if sc.steps is not None:
        step_targets.append(sc.steps)
    if chunk is not None:
        step_targets.append(run.step + chunk)
    if sc.check_finite:
        step_targets.append(run.checked_at + sc.check_finite)
    if run.walls:
        elapsed = max(_time.perf_counter() - run.wall_started, 1e-9)
        rate = run.step / elapsed if run.step else 0.0
        left = min(run.wall_due) - _time.perf_counter()
        step_targets.append(run.step + max(1, int(rate * left)))
    n_step = min((t for t in step_targets if t is not None and t > run.step), default=None)
    time_targets = [s.next_time(run.time) for s in schedules] + [sc.until]
    target_time = min((t for t in time_targets if t is not None), default=None)
    k, last = steps_to_time(run.time, target_time, dt) if target_time is not None else (0, dt)
    if target_time is not None and (n_step is None or run.step + k <= n_step):
        segment = _Segment([(k - 1, dt), (1, last)], run.step + k, target_time, [])
    else:
        n = n_step - run.step
        segment = _Segment([(n, dt)], n_step, run.time + n * dt, [])
    final = _is_final(sc, segment.step, segment.time)
    segment.staged = run.due(run.staged, segment.step, segment.time, final)
    return segment


def _is_final(sc: Any, step: int, time: float) -> bool:
    return ((sc.steps is not None and step >= sc.steps)
            or (sc.until is not None and time >= sc.until))


def _loop(run: _Run, progress: ProgressFn | None) -> None:
    sc, dt = run.plan.scenario, run.plan.dt
    expected = sc.steps if sc.steps is not None else math.ceil(sc.until / dt - TIME_RTOL)
    chunk = max(1, expected // _PROGRESS_UPDATES) if progress else None
    run.capture(run.due(run.plain, run.step, run.time, final=_is_final(sc, run.step, run.time)))
    while not (run.stopped or _is_final(sc, run.step, run.time)):
        segment = _plan_segment(run, chunk)
        start, start_step, start_time = run.fields, run.step, run.time
        fired = run.run_pieces(segment)
        run.flush()  # the previous capture's host copy, while this segment computes
        if fired is not None:
            run.stopped = any(run.whens[j][0] is None for j in np.flatnonzero(fired))
        final = run.stopped or _is_final(sc, run.step, run.time)
        streams = run.due(run.plain, run.step, run.time, final)
        if fired is not None:
            for j in np.flatnonzero(fired):
                stream, when = run.whens[j]
                run.cooldown_until[j] = run.step + when.cooldown + 1
                if (stream is not None and stream not in streams
                        and run.last_capture.get(stream.name) != run.step):
                    streams.append(stream)
        if run.walls:
            run.backend.synchronize(run.fields)
            now = _time.perf_counter()
            for j, (stream, wall) in enumerate(run.walls):
                if now >= run.wall_due[j]:
                    run.wall_due[j] = now + wall.seconds
                    if stream not in streams:
                        streams.append(stream)
        if sc.check_finite and (streams or final or run.step - run.checked_at >= sc.check_finite):
            done = [(c, d) for c, d in segment.pieces]
            if fired is not None:  # stopped early: replay only the steps taken
                done, left = [], run.step - start_step
                for count, d in segment.pieces:
                    done.append((min(count, left), d))
                    left -= done[-1][0]
            run.check_finite(start, start_step, start_time, done)
        run.capture(streams, defer=True)
        if progress:
            progress(run.step, run.time, run.writer.written, expected)
    run.flush()


# ---------------------------------------------------------------- vectorized ensembles


def check_vectorizable(plans: list[RunPlan], keys: list[str]) -> None:
    """Refuse, with a message, members that cannot share one batched loop."""
    first = plans[0]
    reasons = []
    if first.scenario.backend != "jax":
        reasons.append(f"backend jax, given {first.scenario.backend}")
    if any(not key.startswith("params.") or key.count(".") != 1 for key in keys):
        reasons.append(f"swept keys of the form params.NAME, given {keys}")
    if len({p.dt for p in plans}) > 1:
        reasons.append("one dt for every member (set dt in the scenario), given several")
    if first.scenario.steps is None or first.stop_when is not None:
        reasons.append("a run length in steps without stop_when")
    for stream in first.streams:
        if stream.stage is not None or any(
                m.next_time(-math.inf) is not None or isinstance(m, (When, WallTime))
                for m in members(stream.schedule)):
            reasons.append(f"step schedules only, given outputs.{stream.name}")
    if reasons:
        raise ScenarioError("expected " + "; ".join(reasons), key="--vectorize")


def execute_vectorized(plans: list[RunPlan], keys: list[str]) -> list[RunResult]:
    """Run ensemble members that differ only in scalar solver parameters as one batched
    compiled loop on one device (``jax.vmap``), writing one file per member.

    Args:
        plans: validated members (see ``check_vectorizable``).
        keys: the swept keys, ``params.NAME``.
    """
    check_vectorizable(plans, keys)
    first, sc = plans[0], plans[0].scenario
    backend = get_backend("jax", sc.device, sc.dtype, compile=True)
    cls, names = type(first.solver), [key.split(".", 1)[1] for key in keys]
    base = first.solver.params.model_dump()
    values = backend.asarray(np.array([[float(getattr(p.solver.params, n)) for n in names]
                                       for p in plans]))

    def solver_for(row):
        # Parameters as traced values: the stages close over them like constants.
        return cls(cls.Params.model_construct(**{**base, **dict(zip(names, row, strict=True))}))

    build = _batched_builders(cls, first.solver.params.model_dump_json(), tuple(names),
                              sc.seed, solver_for)
    hosts = [p.solver.initial_state(p.initial, np.random.default_rng(sc.seed)) for p in plans]
    fields = {f.name: backend.asarray(np.stack([h[f.name] for h in hosts]))
              for f in first.solver.fields()}
    # Written on this thread: HDF5 must never be entered by two threads at once.
    writers = [NetCDFWriter(p.output, _layout(p, sc.dtype), provenance(p, backend),
                            overwrite=True) for p in plans]
    step, dt = 0, first.dt
    try:
        _capture_batch(first, backend, build, fields, values, writers, step, 0.0, sc.steps == 0)
        while step < sc.steps:
            targets = [s.schedule.next_step(step) for s in first.streams] + [sc.steps]
            target = min(t for t in targets if t is not None)
            fields = backend.batched_advance(build["step"], fields, values, target - step, dt,
                                             step, step * dt)
            step = target
            _capture_batch(first, backend, build, fields, values, writers, step, step * dt,
                           step == sc.steps)
        host = backend.to_host(fields)
        results = []
        for m, writer in enumerate(writers):
            state = {name: np.array(value[m]) for name, value in host.items()}
            writer.write_final(step, step * dt, state)
            path = writer.close({schema.ATTR_FINISHED: _now()})
            results.append(RunResult(path=path, state=state, step=step, time=step * dt))
    except BaseException:
        for writer in writers:
            writer.abort({schema.ATTR_FINISHED: _now()})
        raise
    return results


_BATCHED: dict[tuple, dict[str, Any]] = {}


def _batched_builders(cls: Any, params_json: str, names: tuple, seed: int, solver_for: Any
                      ) -> dict[str, Any]:
    """The per-member step and diagnostics functions of a batched run, kept so a second run of
    the same ensemble reuses what JAX compiled."""
    key = (cls, params_json, names, seed)
    if key not in _BATCHED:
        def step(fields, row, dt, index, time):
            return make_step(solver_for(row), seed)(fields, dt, index, time)

        def diagnostics(fields, row):
            return {d.name: d.fn(fields) for d in solver_for(row).diagnostics()}

        _BATCHED[key] = {"step": step, "diagnostics": diagnostics}
    return _BATCHED[key]


def _capture_batch(plan: RunPlan, backend: Any, build: dict, fields: dict, values: Any,
                   writers: list[NetCDFWriter], step: int, time: float, final: bool) -> None:
    streams = [s for s in plan.streams
               if s.schedule.fires(step, time) or (final and s.schedule.at_end)]
    if not streams:
        return
    names = {name for s in streams for name in s.fields}
    device = {name: fields[name] for name in names}
    if any(s.diagnostics for s in streams):
        device.update(backend.batched_call(build["diagnostics"], fields, values))
    host = backend.to_host(device)
    for name, value in host.items():
        bad = np.flatnonzero(~np.isfinite(value.reshape(len(writers), -1)).all(axis=1))
        if bad.size:
            raise NonFiniteError(f"member {int(bad[0])}: non-finite value in {name!r} at or "
                                 f"before step {step}")
    for m, writer in enumerate(writers):
        for stream in streams:
            writer.write_capture(stream.name, step, time,
                                 {name: host[name][m] for name in stream.fields + stream.diagnostics})
