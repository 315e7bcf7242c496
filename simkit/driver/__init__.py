"""The driver, the only glue: solver + backend + schedules + output file.

``execute`` runs a plan into its file: a ``Run`` (``_run``) advanced by the loop (``_loop``) in
compiled blocks (``_blocks``), captures between blocks on the host path (``_captures``), a
non-finite state located by replay (``_replay``); ``_ensemble`` runs many plans as one.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simkit import _stop
from simkit._version import __version__
from simkit.backends import AbstractBackend, get_backend
from simkit.driver._captures import Capture, HostBuffers, commit_callback
from simkit.driver._loop import ProgressFn, loop, stop_check
from simkit.driver._run import (
    ResumePoint,
    Run,
    is_checkpoint,
    restore_schedules,
    save_schedules,
)
from simkit.errors import NonFiniteError, RunInterrupted, ScenarioError
from simkit.io import BackgroundWriter, NetCDFWriter, schema
from simkit.scenario import RunPlan
from simkit.schedule import WallTime, members

logger = logging.getLogger(__name__)

#: Called on the writer thread with each capture once it is on disk.
CaptureFn = Callable[[Capture], None]
_PROVENANCE_PACKAGES = ("numpy", "array-api-compat", "xarray", "netCDF4", "pydantic")
_BACKEND_PACKAGES = {"numpy": (), "jax": ("jax", "jaxlib"), "torch": ("torch",)}


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
        schema.ATTR_COMPILED: backend.compiled_with or "no",
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


def execute(plan: RunPlan, progress: ProgressFn | None = None,
            resume: ResumePoint | None = None, on_capture: CaptureFn | None = None,
            stop: threading.Event | None = None,
            closing: Mapping[str, Any] | None = None,
            opening: Mapping[str, Any] | None = None) -> RunResult:
    """Run a validated plan to its end, writing its file.

    Args:
        plan: from ``simkit.scenario.plan_run``.
        progress: called between blocks; when given, blocks are cut so it is called about
            ``simkit.driver._loop.PROGRESS_UPDATES`` times.
        resume: continue the existing file at ``plan.output`` from this point.
        on_capture: called with every capture once it is on disk (on the writer thread).
        stop: when set, the run stops at the next block boundary as on Ctrl-C (so does a
            ``simkit stop`` of its file: see ``simkit.io.request_stop``).
        closing: attributes the finished file gets; a status among them replaces ``complete``
            (a run whose gradients are still to be written stays ``running``).
        opening: attributes a new file gets when it is created (not on a resume).

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
    attrs = {**provenance(plan, backend), **(opening or {})}
    if resume is not None:
        # The file holds every capture up to the checkpoint, none after it.
        attrs = {schema.ATTR_RESUMED: _now(), schema.ATTR_DEVICE: backend.device,
                 schema.ATTR_COMPILED: backend.compiled_with or "no",
                 schema.ATTR_COMMITTED: np.int64(resume.step if resume.fields is not None
                                                 else -1)}
    buffers = HostBuffers()
    writer = BackgroundWriter(NetCDFWriter(plan.output, _layout(plan, sc.dtype), attrs,
                                           overwrite=plan.overwrite, append=resume is not None),
                              on_written=lambda stream, step, arrays: buffers.give_back(arrays),
                              on_committed=(commit_callback(plan, on_capture)
                                            if on_capture is not None else None))
    compiled = backend.compiled_with
    logger.info("%s %s on %s (%s, %s, %s) -> %s", "resuming" if resume else "running",
                plan.solver.name, backend.name, backend.device, sc.dtype,
                f"compiled by {compiled}" if compiled else "not compiled", plan.output)
    run = None
    requested = stop_check(plan.output, stop)
    try:
        # A stop signal is a flag the loop sees at its next block boundary (raised, it could be
        # swallowed by a library callback); once the run is complete it changes nothing.
        with _stop.deferred():
            run = Run(plan, backend, writer, buffers, resume)
            loop(run, progress, requested)
            host = backend.to_host(run.fields)
            writer.final(run.step, run.time, host)
            path = writer.close({schema.ATTR_FINISHED: _now(), **(closing or {})})
        logger.info("finished at step %d, time %g; %d captures written", run.step, run.time,
                    writer.written)
    except NonFiniteError as error:
        writer.final(run.step, run.time, backend.to_host(run.fields))
        writer.abort(failed(error, schema.STATUS_NON_FINITE))
        raise
    except KeyboardInterrupt as error:  # Ctrl-C, a stop signal or request seen by the loop
        with _stop.deferred():  # a second signal must not break off the clean stop
            kept = writer.abort({schema.ATTR_FINISHED: _now(),
                                 schema.ATTR_STATUS: schema.STATUS_INTERRUPTED})
        _stop.take()
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

    def capture_blocks(self, blocks: list[tuple[str, list[int], list[float], Any]]) -> None:
        self.written += sum(len(steps) for _, steps, _, _ in blocks)

    def capture_many(self, captures: list[tuple[str, int, float, Any]]) -> None:
        for capture in captures:
            self.capture(*capture)

    def committed(self, step: int) -> None:
        pass

    def final(self, step: int, time: float, arrays: Any) -> None:
        pass


def _execute_silent(plan: RunPlan, backend: AbstractBackend, progress: ProgressFn | None,
                    resume: ResumePoint | None) -> RunResult:
    """``execute`` on a process that writes no file (see ``_NoFile``)."""
    buffers = HostBuffers()
    writer = _NoFile(plan.output, buffers.give_back)
    with _stop.deferred():  # process 0 decides when to stop; every process agrees
        run = Run(plan, backend, writer, buffers, resume)  # type: ignore[arg-type]
        loop(run, progress, _stop.received)
    return RunResult(path=plan.output, state=backend.to_host(run.fields), step=run.step,
                     time=run.time)


def failed(error: BaseException, status: str = schema.STATUS_FAILED) -> dict[str, str]:
    """The attributes that close the file of a run stopped by ``error``."""
    message = " ".join(f"{type(error).__name__}: {error}".split())
    return {schema.ATTR_FINISHED: _now(), schema.ATTR_STATUS: status,
            schema.ATTR_ERROR: message}

# The ensemble loop imports what this module defines (RunResult, provenance, ...), so it comes
# after them.
from simkit.driver._ensemble import check_vectorizable, execute_ensemble  # noqa: E402

__all__ = ["Capture", "CaptureFn", "ProgressFn", "ResumePoint", "RunResult",
           "check_vectorizable", "execute", "execute_ensemble", "is_checkpoint", "provenance",
           "restore_schedules", "save_schedules"]
