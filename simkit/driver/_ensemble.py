"""Vectorized ensembles: members that differ only in scalar solver parameters run through the
block loop as one program mapped over a leading ``member`` axis, each member written to a file of
its own by the run's writer path, as a run of its own would be.

One plan serves every member (their schedules are the same); the parameters are data of the
compiled block, so one trace serves the whole ensemble. A member whose state turns non-finite
stops alone, with the same replay, message and file as a run of its own; the others go on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from simkit import _stop
from simkit.backends import AbstractBackend, get_backend
from simkit.backends._block import BlockPlan, BlockProgram
from simkit.driver._blocks import BLOCK_BYTES, BlockLoop, build_program, capture_bytes
from simkit.driver._buffers import HostBuffers
from simkit.driver._endings import complete, interrupted, non_finite
from simkit.driver._files import RunResult, failed, now, provenance, run_writer
from simkit.driver._loop import stop_check
from simkit.driver._plan import is_final
from simkit.driver._replay import check_start
from simkit.driver._run import Run
from simkit.driver._steps import condition_flags, solver_cached
from simkit.errors import NonFiniteError, ScenarioError
from simkit.io import BackgroundWriter, schema
from simkit.scenario import RunPlan
from simkit.schedule import AbstractSchedule
from simkit.solver import make_step, with_params

logger = logging.getLogger(__name__)


def check_vectorizable(plans: list[RunPlan], keys: list[str]) -> None:
    """Refuse, with one message, members that cannot share one block loop.

    Raises:
        ScenarioError: under ``--vectorize``, naming every reason.
    """
    first = plans[0]
    reasons = []
    if first.scenario.backend != "jax":
        reasons.append(f"backend jax, given {first.scenario.backend}")
    if any(not key.startswith("params.") or key.count(".") != 1 for key in keys):
        reasons.append(f"swept keys of the form params.NAME, given {keys}")
    else:
        # Only real numbers can be traced as data: an integer may size an array.
        for key in keys:
            value = getattr(_params(first.solver), key.split(".", 1)[1], None)
            if type(value) is not float:
                reasons.append(f"swept parameters that are real numbers, given {key} = "
                               f"{value!r} ({type(value).__name__})")
    if len({p.dt for p in plans}) > 1:
        reasons.append("one dt for every member (set dt in the scenario), given several")
    if first.mesh:
        reasons.append("members on one device each, given a run split over devices (mesh)")
    if first.scenario.steps is None or first.stop_when is not None:
        reasons.append("a run length in steps without stop_when")
    for stream in first.streams:
        parts = stream.schedule.members()
        conditions = [c for m in parts for c in (m.edge, m.level) if c is not None]
        stages = [stream.stage, *(c.stage for c in conditions)]
        if any(stages):
            reasons.append(f"streams and conditions at the end of a step, given "
                           f"outputs.{stream.name} on stage {next(filter(None, stages))!r}")
        elif not all(_vectorizable(m) for m in parts):
            reasons.append(f"step schedules only, given outputs.{stream.name}")
    if reasons:
        raise ScenarioError("expected " + "; ".join(reasons), key="--vectorize")


def _vectorizable(member: AbstractSchedule) -> bool:
    """Whether every member of an ensemble captures where ``member`` (one schedule, not a union)
    says at the same steps, the members' clocks and conditions apart: steps known in advance,
    the end of the run, or a level condition (evaluated on the device for each member)."""
    return member.steps_known or member.level is not None


def execute_ensemble(plans: list[RunPlan], keys: list[str], stop: threading.Event | None = None
                     ) -> list[RunResult | NonFiniteError]:
    """Run ensemble members that differ only in scalar solver parameters as one block loop on one
    device, writing one file per member through the run's writer path.

    A member whose state turns non-finite stops alone, as it would in a run of its own: its file
    keeps its captures so far and its last good state, with status ``non-finite``; the other
    members go on to the end.

    The ensemble stops at a block boundary, as a run of its own does, on a stop signal the
    command line noted, on ``stop`` set, or on a stop request of any member's file (``simkit
    stop``): every member still going on is left ``interrupted``, resumable as a run of its own.

    Args:
        plans: validated members (see ``check_vectorizable``).
        keys: the swept keys, ``params.NAME``.
        stop: when set, the ensemble stops at the next block boundary as on Ctrl-C.

    Returns:
        One entry per plan, in order: its ``RunResult``, or the ``NonFiniteError`` that stopped it.

    Raises:
        ScenarioError: the members cannot share one block loop.
        KeyboardInterrupt: a stop signal or request, naming it; the members' files are closed.
    """
    check_vectorizable(plans, keys)
    sc = plans[0].scenario
    backend = get_backend(sc.backend, sc.device, sc.dtype, compile=True)
    buffers = HostBuffers()
    runs: list[Run] = []
    writers: list[BackgroundWriter] = []
    try:
        for plan in plans:
            writer = run_writer(plan, provenance(plan, backend), buffers)
            try:
                runs.append(Run(plan, backend, writer, buffers))
            except BaseException:
                writer.abort({schema.ATTR_FINISHED: now()})
                raise
            writers.append(writer)
        logger.info("running %d members of %s as one ensemble on %s (%s, %s)", len(plans),
                    plans[0].solver.name, backend.name, backend.device, sc.dtype)
        ensemble = _Ensemble(runs, writers, backend, [k.split(".", 1)[1] for k in keys])
    except BaseException:
        for writer in writers:
            writer.abort({schema.ATTR_FINISHED: now()})
        raise
    checks = [stop_check(plan.output, stop) for plan in plans]
    return ensemble.execute(lambda: next(filter(None, (check() for check in checks)), None))


class _Members:
    """The lanes of ensemble members: one batched state along a leading member axis, one call
    of the ensemble's block program per block for all of them."""

    def __init__(self, runs: list[Run], backend: AbstractBackend, runner: Any, values: Any,
                 slots: int) -> None:
        self.runs, self.backend, self.runner, self.values = runs, backend, runner, values
        self.slots = slots
        xp = array_namespace(*runs[0].fields.values())
        self.fields = {name: xp.stack([run.fields[name] for run in runs])
                       for name in runs[0].fields}
        for run in runs:
            run.fields = {}  # the batch holds the state; a member's is cut out when needed

    def state(self) -> Any:
        return self.fields

    def launch(self, plan: BlockPlan) -> Any:
        return self.backend.run_ensemble_block(self.runner, self.fields, self.values, plan)

    def to_host(self, result: Any) -> list[dict[str, Any]]:
        """Each member's part of a block, as the block loop commits it: one device-to-host copy
        for the whole ensemble, cut on the host (a device slice of each new length would compile
        anew)."""
        small = self.backend.to_host({"counts": result.counts, "finite": result.finite})
        counts = small["counts"].reshape(len(self.runs), self.slots)
        buffers = [self.backend.to_host(slot_buffers) if counts[:, s].any() else {}
                   for s, slot_buffers in enumerate(result.buffers)]
        return [{"counts": counts[m], "finite": small["finite"][m], "fired": None,
                 "held": None, "steps": None,
                 "buffers": [{name: b[m, :counts[m, s]] for name, b in slot.items()}
                             if counts[m, s] else {} for s, slot in enumerate(buffers)]}
                for m in range(len(self.runs))]

    def advance(self, result: Any) -> None:
        self.fields = result.fields

    def member(self, state: Any, m: int) -> Any:
        return {name: value[m] for name, value in state.items()}

    def release(self, m: int) -> None:
        self.runs[m].fields = {}


class _Ensemble:
    """The members of one vectorized run: their files, the block loop they share, and how each
    ended."""

    def __init__(self, runs: list[Run], writers: list[BackgroundWriter],
                 backend: AbstractBackend, names: list[str]) -> None:
        self.runs, self.writers, self.backend, self.names = runs, writers, backend, names
        first = runs[0].plan
        self.results: list[RunResult | NonFiniteError | None] = [None] * len(runs)
        shapes = {tuple((name, tuple(value.shape)) for name, value in run.fields.items())
                  for run in runs}
        if len(shapes) > 1:
            raise ScenarioError(f"expected fields of one shape in every member, given "
                                f"{len(shapes)} different shapes", key="--vectorize")
        self.program = self._program()
        values = backend.asarray(np.array(
            [[float(getattr(_params(run.plan.solver), n)) for n in names] for run in runs]))
        self.lanes = _Members(runs, backend, self._runner(), values, len(self.program.slots))
        self.blocks = BlockLoop(runs, self.program, self.lanes, first.scenario.flush_seconds,
                                None, stop_member=self._stop)

    # -------------------------------------------------------------- the program

    def _program(self) -> BlockProgram:
        """The block program of the first member, with slots sized for the whole ensemble: the
        block buffers of all members together stay within the run's device-memory budget."""
        program, _ = build_program(self.runs[0],
                                   lambda solver, key, make: make())
        count = len(self.runs)
        budget = BLOCK_BYTES // max(1, len(program.slots))
        slots = []
        for slot in program.slots:
            per = capture_bytes(program.shapes, slot.fields + slot.diagnostics)
            slots.append(dataclasses.replace(
                slot, capacity=max(1, min(slot.capacity, budget // (per * count)))))
        # The step, diagnostics and levels are each member's (see ``_program_for``).
        return dataclasses.replace(program, slots=tuple(slots), step=_no_step, staged=None,
                                   diagnostics={}, watch=None, levels=None)

    def _runner(self) -> Any:
        """The backend's runner of the ensemble's program, kept in the solver cache: a second run
        of the same ensemble in one process (a sweep run again) compiles nothing new."""
        first = self.runs[0].plan
        solver, seed, names = first.solver, first.scenario.seed, tuple(self.names)
        backend, program = self.backend, self.program

        def make() -> Any:
            runner = backend.ensemble_runner(_program_for(solver, names, seed, first, program))
            if runner is None:  # check_vectorizable refuses such backends by name first
                raise ScenarioError(f"expected a backend that maps a run over members, given "
                                    f"{backend.name}", key="--vectorize")
            return runner

        return solver_cached(solver, ("ensemble", names, seed, backend.name, backend.device,
                                      first.scenario.dtype, program.slots, program.points,
                                      tuple(sorted(program.shapes.items())), _levels(first)),
                             make)

    # -------------------------------------------------------------- the loop

    def execute(self, requested: Callable[[], str | None]) -> list[RunResult | NonFiniteError]:
        """Run the members to their end and close their files as each ended; ``requested`` says
        why to stop at a block boundary (see ``simkit.driver._loop.stop_check``), if it should."""
        try:
            # A stop signal is a flag seen at the next block boundary, as in a run of its own.
            with _stop.deferred():
                self._loop(requested)
                self._finish()
        except KeyboardInterrupt:
            interrupted(self._going_on())
            raise
        except BaseException as error:
            for writer in self._going_on():
                writer.abort(failed(error))
            raise
        return [result for result in self.results if result is not None]

    def _loop(self, requested: Callable[[], str | None]) -> None:
        """Blocks until every member stopped or the ensemble is at its end."""
        sc, blocks = self.runs[0].plan.scenario, self.blocks
        if sc.check_finite:
            for m, run in enumerate(self.runs):
                run.fields = self.lanes.member(self.lanes.fields, m)
                try:
                    check_start(run)
                except NonFiniteError as error:
                    self._stop(m, error)
                run.fields = {}
        blocks.capture_start()
        self._committed()
        while blocks.alive.any() and not is_final(sc, blocks.run.step, blocks.run.time):
            blocks.run_block()
            self._committed()
            # Once the ensemble is at its end a stop changes nothing, as for a run of its own.
            reason = requested()
            if reason is not None and not is_final(sc, blocks.run.step, blocks.run.time):
                raise KeyboardInterrupt(reason)

    def _committed(self) -> None:
        """Every member going on has queued every capture due up to its step."""
        for m in np.flatnonzero(self.blocks.alive):
            self.runs[m].writer.committed(self.runs[m].step)

    # -------------------------------------------------------------- endings

    def _stop(self, m: int, error: NonFiniteError) -> None:
        """End member ``m`` alone, as a run of its own ends on a non-finite value: its last good
        state becomes its final state and its file is marked non-finite."""
        run = self.runs[m]
        non_finite(self.writers[m], run.step, run.time, self.backend.to_host(run.fields), error)
        run.fields = {}
        self.blocks.alive[m] = False
        self.results[m] = error
        logger.error("member %d: %s", m, error)

    def _finish(self) -> None:
        host = self.backend.to_host(self.lanes.fields)
        for m in np.flatnonzero(self.blocks.alive):
            run = self.runs[m]
            state = {name: np.array(value[m]) for name, value in host.items()}
            path = complete(self.writers[m], run.step, run.time, state)
            self.blocks.alive[m] = False
            self.results[m] = RunResult(path=path, state=state, step=run.step, time=run.time)
        logger.info("ensemble finished at step %d, time %g", self.runs[0].step,
                    self.runs[0].time)

    def _going_on(self) -> list[BackgroundWriter]:
        """The writers of the members still going on, which stop now (their files closed by
        the caller)."""
        going_on = [self.writers[m] for m in np.flatnonzero(self.blocks.alive)]
        self.blocks.alive[:] = False
        return going_on


def _no_step(fields: Any, dt: Any, step: Any, time: Any) -> dict[str, Any]:
    """The step of an ensemble's shared program: none (each member has its own)."""
    raise AssertionError("an ensemble member's program has its own step")


def _params(solver: Any) -> Any:
    """A solver's parameters (every solver an ensemble runs has them)."""
    return solver.params


def _levels(plan: RunPlan) -> tuple[tuple[str, float | None, float | None, str | None], ...]:
    """The level conditions of the plan's streams, as compiled code is keyed on them."""
    return tuple(s.schedule.level.key for s in plan.streams if s.schedule.level is not None)


def _program_for(solver: Any, names: tuple[str, ...], seed: int, plan: RunPlan,
                 program: BlockProgram) -> Callable[[Any], BlockProgram]:
    """The block program of one member given its parameter row (traced values): the solver's
    stages, diagnostics and level conditions close over them as a run's close over constants."""
    # Level conditions only: conditions on a stage are refused with --vectorize.
    levels = _levels(plan)

    def program_for(row: Any) -> BlockProgram:
        member = with_params(solver, {n: row[i] for i, n in enumerate(names)})
        diagnostics = {d.name: d.fn for d in member.diagnostics()}
        level_fn = condition_flags(diagnostics, levels) if levels else None
        return dataclasses.replace(program, step=make_step(member, seed), staged=None,
                                   diagnostics=diagnostics, watch=None, levels=level_fn)

    return program_for

