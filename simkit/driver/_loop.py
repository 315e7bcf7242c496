"""The run loop: blocks until the run ends, with the captures between them (conditions that
fired, wall-clock captures, stage streams at a block's last step), progress and stop requests."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from simkit import _stop
from simkit.driver._blocks import BlockLoop, OneRun, build_program
from simkit.driver._captures import capture, due
from simkit.driver._plan import is_final
from simkit.driver._replay import check_start
from simkit.driver._run import Run
from simkit.driver._steps import step_for
from simkit.io import stop_request_path
from simkit.scenario import StreamPlan
from simkit.schedule import TIME_RTOL

#: Called between blocks with (step, time, captures written, steps expected or None).
ProgressFn = Callable[[int, float, int, "int | None"], None]
#: Blocks are cut this many times per run when progress is shown.
PROGRESS_UPDATES = 100


def stop_check(output: Path, stop: threading.Event | None) -> Callable[[], str | None]:
    """What asks the run to stop at a block boundary: a stop signal the command line noted
    (``simkit._stop``), ``stop`` set (by ``simkit.iterate``), or a stop request beside the output
    file (``simkit stop``), taken back when seen."""
    request = stop_request_path(output)
    if request.exists():  # left by an earlier run of this file: not meant for this one
        request.unlink(missing_ok=True)

    def check() -> str | None:
        signalled = _stop.received()
        if signalled:
            return signalled
        if stop is not None and stop.is_set():
            return "a stop request"
        if request.exists():
            request.unlink(missing_ok=True)
            return "simkit stop"
        return None

    return check


def loop(run: Run, progress: ProgressFn | None,
          stop_requested: Callable[[], str | None] = lambda: None) -> None:
    """Run blocks until the run ends: each block is one call of the backend, capturing on the
    device; only what happens between blocks (a condition that fired, a wall-clock capture)
    takes the host path."""
    sc, dt = run.plan.scenario, run.plan.dt
    until = sc.until if sc.until is not None else 0.0  # a run ends at steps or until
    expected = sc.steps if sc.steps is not None else math.ceil(until / dt - TIME_RTOL)
    chunk = max(1, expected // PROGRESS_UPDATES) if progress else None
    if sc.check_finite:
        check_start(run)
    program, runner = build_program(run)  # first: it checks what the captures will take
    capture(run, due(run, run.plain, run.step, run.time,
                     final=is_final(sc, run.step, run.time)))
    blocks = BlockLoop([run], program, OneRun(run, runner), sc.flush_seconds, chunk)
    while not (run.stopped or is_final(sc, run.step, run.time)):
        fired = blocks.run_block()
        streams: list[StreamPlan] = []
        if fired is not None:
            run.stopped = any(run.whens[j].stream is None for j in np.flatnonzero(fired))
            final = run.stopped or is_final(sc, run.step, run.time)
            streams = due(run, run.plain, run.step, run.time, final,
                          lambda stage: _stage_state(run, blocks, stage))
            for j in np.flatnonzero(fired):  # (their cooldowns started in the block loop)
                stream = run.whens[j].stream
                if (stream is not None and stream not in streams
                        and run.last_capture.get(stream.name) != run.step):
                    streams.append(stream)
        if run.walls:
            for wall in run.walls:
                if wall.state.due():
                    wall.state.fired()
                    blocks.drop_plan()
                    stream = wall.stream
                    if stream not in streams and run.last_capture.get(stream.name) != run.step:
                        streams.append(stream)
        capture(run, [s for s in streams if s.stage is None])
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
            agreed = run.backend.agree(1.0 if reason else 0.0)
            reason = (reason or "simkit stop") if agreed else None
        if reason is not None and not is_final(sc, run.step, run.time) and not run.stopped:
            raise KeyboardInterrupt(reason)


def _capture_at_stages(run: Run, blocks: BlockLoop, streams: list[StreamPlan]) -> None:
    """Captures of stage streams at the step a block ended on, which no block planned as a
    capture (a condition fired there, a wall-clock capture fell due, a condition ended the run):
    that step is retaken stage by stage from the block's start."""
    if not streams or not blocks.has_taken_steps():
        return
    stages = tuple(dict.fromkeys(s.stage for s in streams if s.stage is not None))
    seen = blocks.last_step_stages(step_for(run.plan.solver, run.plan.scenario.seed, stages))
    for stage in stages:
        capture(run, [s for s in streams if s.stage == stage], source=seen[stage])


def _stage_state(run: Run, blocks: BlockLoop, stage: str) -> Any:
    """The state right after ``stage`` of the step the last block ended with, retaken from the
    block's start (None when no block has taken a step: the state the run starts from)."""
    if not blocks.has_taken_steps():
        return None
    solver, seed = run.plan.solver, run.plan.scenario.seed
    return blocks.last_step_stages(step_for(solver, seed, (stage,)))[stage]
