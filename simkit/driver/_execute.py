"""``execute``: one plan run to its end into its file, with the attributes that open and close
it; on processes other than process 0 of a multi-process run, the same run writing nothing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from simkit import _stop
from simkit.backends import AbstractBackend, get_backend
from simkit.driver._buffers import HostBuffers
from simkit.driver._captures import Capture, commit_callback
from simkit.driver._endings import complete, interrupted, non_finite
from simkit.driver._files import RunResult, failed, now, provenance, run_writer
from simkit.driver._loop import ProgressFn, loop, stop_check
from simkit.driver._run import ResumePoint, Run
from simkit.errors import NonFiniteError, RunInterrupted, ScenarioError
from simkit.io import BackgroundWriter, schema
from simkit.scenario import RunPlan

logger = logging.getLogger(__name__)

#: Called on the writer thread with each capture once it is on disk.
CaptureFn = Callable[[Capture], None]


def _opening(plan: RunPlan, backend: AbstractBackend, resume: ResumePoint | None,
             opening: Mapping[str, object] | None) -> dict[str, object]:
    """The attributes the run's file gets when the run starts (or resumes)."""
    if resume is None:
        return {**provenance(plan, backend), **(opening or {})}
    # The file holds every capture up to the checkpoint, none after it.
    return {schema.ATTR_RESUMED: now(), schema.ATTR_DEVICE: backend.device,
            schema.ATTR_COMPILED: backend.compiled_with or "no",
            schema.ATTR_COMMITTED: np.int64(resume.step if resume.fields is not None else -1)}


def _writer(plan: RunPlan, backend: AbstractBackend, buffers: HostBuffers,
            resume: ResumePoint | None, on_capture: CaptureFn | None,
            opening: Mapping[str, object] | None) -> BackgroundWriter:
    """The run's writer: its file created (or opened to append to on a resume)."""
    return run_writer(plan, _opening(plan, backend, resume, opening), buffers,
                       append=resume is not None,
                       on_committed=(commit_callback(plan, on_capture)
                                     if on_capture is not None else None))


def execute(plan: RunPlan, progress: ProgressFn | None = None,
            resume: ResumePoint | None = None, on_capture: CaptureFn | None = None,
            stop: threading.Event | None = None,
            closing: Mapping[str, object] | None = None,
            opening: Mapping[str, object] | None = None) -> RunResult:
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
        check_processes(plan, backend.process_count)
    if backend.process_index:  # one of several processes of a run: process 0 writes the file
        return _execute_silent(plan, backend, progress, resume)
    buffers = HostBuffers()
    writer = _writer(plan, backend, buffers, resume, on_capture, opening)
    compiled = backend.compiled_with
    logger.info("%s %s on %s (%s, %s, %s) -> %s", "resuming" if resume else "running",
                plan.solver.name, backend.name, backend.device, sc.dtype,
                f"compiled by {compiled}" if compiled else "not compiled", plan.output)
    return _run_to_end(plan, backend, writer, buffers, resume, progress,
                       stop_check(plan.output, stop), closing)


def _run_to_end(plan: RunPlan, backend: AbstractBackend, writer: BackgroundWriter,
                buffers: HostBuffers, resume: ResumePoint | None, progress: ProgressFn | None,
                requested: Callable[[], str | None],
                closing: Mapping[str, object] | None) -> RunResult:
    """Run the plan through ``writer`` and close its file as the run ended."""
    run = None
    try:
        # A stop signal is a flag the loop sees at its next block boundary (raised, it could be
        # swallowed by a library callback); once the run is complete it changes nothing.
        with _stop.deferred():
            run = Run(plan, backend, writer, buffers, resume)
            loop(run, progress, requested)
            host = backend.to_host(run.fields)
            path = complete(writer, run.step, run.time, host, closing)
        logger.info("finished at step %d, time %g; %d captures written", run.step, run.time,
                    writer.written)
    except NonFiniteError as error:
        assert run is not None  # only a run's loop finds a non-finite state
        non_finite(writer, run.step, run.time, backend.to_host(run.fields), error)
        raise
    except KeyboardInterrupt as error:  # Ctrl-C, a stop signal or request seen by the loop
        kept, = interrupted([writer])
        raise RunInterrupted(str(error) or "SIGINT", kept) from error
    except BaseException as error:
        kept = writer.abort(failed(error))
        if Path(kept) != Path(plan.output):  # a run that was to replace a file
            logger.error("the run so far is kept in %s", kept)
        raise
    return RunResult(path=path, state=host, step=run.step, time=run.time)


def check_processes(plan: RunPlan, count: int) -> None:
    """Refuse what several processes cannot agree on: each plans the same blocks, so a schedule
    may not depend on its own clock."""
    for stream in plan.streams:
        if any(m.wall_clock is not None for m in stream.schedule.members()):
            raise ScenarioError(f"expected schedules of steps or simulated time in a run of "
                                f"{count} processes (each has its own clock), given wall_time",
                                key=f"outputs.{stream.name}")


class _NoFile:
    """The writer of a process other than process 0 in a multi-process run: it computes and
    gathers every capture with the others (their collectives need it) and writes nothing."""

    written = 0

    def __init__(self, path: Path, done: Callable[[Mapping[str, np.ndarray]], None]) -> None:
        self.partial_path = path
        self._done = done

    def capture(self, stream: str, step: int, time: float,
                arrays: Mapping[str, np.ndarray]) -> None:
        self.written += 1
        self._done(arrays)

    def capture_blocks(self, blocks: list[tuple[str, list[int], list[float],
                                                Mapping[str, np.ndarray]]]) -> None:
        self.written += sum(len(steps) for _, steps, _, _ in blocks)

    def capture_many(self, captures: list[tuple[str, int, float, Mapping[str, np.ndarray]]]
                     ) -> None:
        for capture in captures:
            self.capture(*capture)

    def committed(self, step: int) -> None:
        pass

    def final(self, step: int, time: float, arrays: Mapping[str, np.ndarray]) -> None:
        pass


def _execute_silent(plan: RunPlan, backend: AbstractBackend, progress: ProgressFn | None,
                    resume: ResumePoint | None) -> RunResult:
    """``execute`` on a process that writes no file (see ``_NoFile``)."""
    buffers = HostBuffers()
    writer = _NoFile(plan.output, buffers.give_back)
    with _stop.deferred():  # process 0 decides when to stop; every process agrees
        run = Run(plan, backend, writer, buffers, resume)
        loop(run, progress, _stop.received)
    return RunResult(path=plan.output, state=backend.to_host(run.fields), step=run.step,
                     time=run.time)
