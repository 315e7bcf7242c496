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
import time as _time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from simkit import _stop
from simkit.backends import AbstractBackend, get_backend
from simkit.backends._block import BlockPlan, BlockProgram
from simkit.driver import RunResult, _layout, _now, failed, provenance
from simkit.driver._blocks import BLOCK_BYTES, BlockLoop, _is_final, _Point, build_program
from simkit.driver._captures import HostBuffers
from simkit.driver._replay import check_start
from simkit.driver._run import Run
from simkit.driver._steps import condition_flags
from simkit.errors import NonFiniteError, ScenarioError
from simkit.io import BackgroundWriter, NetCDFWriter, schema
from simkit.scenario import RunPlan
from simkit.schedule import While, fixed_in_steps, members
from simkit.solver import make_step, with_params

logger = logging.getLogger(__name__)

#: Compiled ensemble blocks by solver, parameters, swept names and what the block keeps, so a
#: second run of the same ensemble in one process (a sweep run again) compiles nothing new.
_RUNNERS: OrderedDict[tuple, Any] = OrderedDict()
_RUNNERS_KEPT = 4


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
            value = getattr(first.solver.params, key.split(".", 1)[1], None)
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
        stages = [stream.stage, *(getattr(m, "stage", None) for m in members(stream.schedule))]
        if any(stages):
            reasons.append(f"streams and conditions at the end of a step, given "
                           f"outputs.{stream.name} on stage {next(filter(None, stages))!r}")
        elif any(
                not (fixed_in_steps(m) or isinstance(m, While))  # levels are vectorized
                for m in members(stream.schedule)):
            reasons.append(f"step schedules only, given outputs.{stream.name}")
    if reasons:
        raise ScenarioError("expected " + "; ".join(reasons), key="--vectorize")


@dataclass
class _Lead:
    """What the block planner reads of a run, for the whole ensemble: every member shares its
    plan's schedules, step, time and captures so far (no conditions: ``check_vectorizable``)."""

    plan: RunPlan
    step: int = 0
    time: float = 0.0
    last_capture: dict[str, int] = field(default_factory=dict)
    whens: tuple = ()
    walls: tuple = ()


def execute_ensemble(plans: list[RunPlan], keys: list[str]) -> list[RunResult | NonFiniteError]:
    """Run ensemble members that differ only in scalar solver parameters as one block loop on one
    device, writing one file per member through the run's writer path.

    A member whose state turns non-finite stops alone, as it would in a run of its own: its file
    keeps its captures so far and its last good state, with status ``non-finite``; the other
    members go on to the end.

    Args:
        plans: validated members (see ``check_vectorizable``).
        keys: the swept keys, ``params.NAME``.

    Returns:
        One entry per plan, in order: its ``RunResult``, or the ``NonFiniteError`` that stopped it.

    Raises:
        ScenarioError: the members cannot share one block loop.
    """
    check_vectorizable(plans, keys)
    sc = plans[0].scenario
    backend = get_backend(sc.backend, sc.device, sc.dtype, compile=True)
    buffers = HostBuffers()
    runs: list[Run] = []
    try:
        for plan in plans:
            writer = BackgroundWriter(
                NetCDFWriter(plan.output, _layout(plan, sc.dtype), provenance(plan, backend),
                             overwrite=plan.overwrite),
                on_written=lambda stream, step, arrays: buffers.give_back(arrays))
            try:
                runs.append(Run(plan, backend, writer, buffers))
            except BaseException:
                writer.abort({schema.ATTR_FINISHED: _now()})
                raise
        logger.info("running %d members of %s as one ensemble on %s (%s, %s)", len(plans),
                    plans[0].solver.name, backend.name, backend.device, sc.dtype)
        ensemble = _Ensemble(runs, backend, [k.split(".", 1)[1] for k in keys])
    except BaseException:
        for run in runs:
            run.writer.abort({schema.ATTR_FINISHED: _now()})
        raise
    return ensemble.execute()


class _Ensemble:
    """The members of one vectorized run: their batched state, files, and how each ended."""

    def __init__(self, runs: list[Run], backend: AbstractBackend, names: list[str]) -> None:
        self.runs, self.backend, self.names = runs, backend, names
        first = runs[0].plan
        self.lead = _Lead(first)
        self.alive = np.ones(len(runs), dtype=bool)
        self.results: list[RunResult | NonFiniteError | None] = [None] * len(runs)
        shapes = {tuple((name, tuple(value.shape)) for name, value in run.fields.items())
                  for run in runs}
        if len(shapes) > 1:
            raise ScenarioError(f"expected fields of one shape in every member, given "
                                f"{len(shapes)} different shapes", key="--vectorize")
        self.program = self._program()
        self.planner = BlockLoop(self.lead, self.program, None, first.scenario.flush_seconds,
                                 None)
        # Each member commits and replays through the run loop's own code, with its own file.
        self.loops = [BlockLoop(run, self.program, None, first.scenario.flush_seconds, None)
                      for run in runs]
        self.values = backend.asarray(np.array(
            [[float(getattr(run.plan.solver.params, n)) for n in names] for run in runs]))
        self.runner = self._runner()
        xp = array_namespace(*runs[0].fields.values())
        self.fields = {name: xp.stack([run.fields[name] for run in runs])
                       for name in runs[0].fields}
        for run in runs:
            run.fields = {}  # the batch holds the state; a member's is cut out when needed

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
            per = sum(int(np.prod(program.shapes[n][0], dtype=np.int64))
                      * np.dtype(program.shapes[n][1]).itemsize
                      for n in slot.fields + slot.diagnostics) + 16
            slots.append(dataclasses.replace(
                slot, capacity=max(1, min(slot.capacity, budget // (per * count)))))
        return dataclasses.replace(program, slots=tuple(slots), step=None, staged=None,
                                   diagnostics={}, watch=None, levels=None)

    def _runner(self) -> Any:
        first = self.runs[0].plan
        solver, seed, names = first.solver, first.scenario.seed, tuple(self.names)
        backend, program = self.backend, self.program
        key = (type(solver), solver.params.model_dump_json(), names, seed, backend.device,
               first.scenario.dtype, program.slots, program.points,
               tuple(sorted(program.shapes.items())),
               tuple((s.schedule.diagnostic, s.schedule.above, s.schedule.below)
                     for s in first.streams if isinstance(s.schedule, While)))
        runner = _RUNNERS.get(key)
        if runner is None:
            runner = backend.ensemble_runner(_program_for(solver, names, seed, first, program))
            if runner is None:  # check_vectorizable refuses such backends by name first
                raise ScenarioError(f"expected a backend that maps a run over members, given "
                                    f"{backend.name}", key="--vectorize")
            _RUNNERS[key] = runner
            while len(_RUNNERS) > _RUNNERS_KEPT:
                _RUNNERS.popitem(last=False)
        else:
            _RUNNERS.move_to_end(key)
        return runner

    # -------------------------------------------------------------- the loop

    def execute(self) -> list[RunResult | NonFiniteError]:
        sc = self.lead.plan.scenario
        try:
            if sc.check_finite:
                for m, run in enumerate(self.runs):
                    run.fields = self._member(self.fields, m)
                    try:
                        check_start(run)
                    except NonFiniteError as error:
                        self._stop(m, error)
                    run.fields = {}
            plan, points = self._initial_block()
            if points[0].due:
                self._block(plan, points)
            lead, planned = self.lead, None
            while self.alive.any() and not _is_final(sc, lead.step, lead.time):
                if planned is None:
                    planned = self.planner.plan_block(lead.step, lead.time,
                                                      dict(lead.last_capture))
                planned = self._block(*planned)
                # A stop signal the command line noted (simkit._stop); once the ensemble is at
                # its end it changes nothing, as for a single run (loop).
                if _stop.received() and not _is_final(sc, lead.step, lead.time):
                    raise KeyboardInterrupt(_stop.take())
            self._finish()
        except KeyboardInterrupt:
            self._abort({schema.ATTR_FINISHED: _now(),
                         schema.ATTR_STATUS: schema.STATUS_INTERRUPTED})
            raise
        except BaseException as error:
            self._abort(failed(error))
            raise
        return self.results  # type: ignore[return-value]

    def _initial_block(self) -> tuple[BlockPlan, list[_Point]]:
        """A block of one point of no steps: the captures of the state the run starts from,
        taken on the device like every other capture."""
        lead, sc = self.lead, self.lead.plan.scenario
        plan = BlockPlan.empty(self.program.points, len(self.program.slots), 0)
        final = _is_final(sc, lead.step, lead.time)
        due = [s for s in lead.plan.streams
               if s.schedule.fires(lead.step, lead.time) or (final and s.schedule.at_end)]
        index = {s.name: i for i, s in enumerate(lead.plan.streams)}
        plan.steps[0], plan.times[0], plan.used = lead.step, lead.time, 1
        for stream in due:
            plan.due[0, index[stream.name]] = True
        return plan, [_Point(0, 0.0, 0.0, lead.step, lead.time, 0, lead.step, lead.time, due)]

    def _block(self, plan: BlockPlan, points: list[_Point]
               ) -> tuple[BlockPlan, list[_Point]] | None:
        """Run one block for every member, then commit each member's captures to its file (or
        stop a member whose state turned non-finite in it).

        Returns:
            The next block, planned while the device computed this one (None at the end):
            without conditions every block ends as planned.
        """
        lead, sc = self.lead, self.lead.plan.scenario
        start, start_step, start_time = self.fields, lead.step, lead.time
        started = _time.perf_counter()
        result = self.backend.run_ensemble_block(self.runner, self.fields, self.values, plan)
        end = points[-1]
        planned = None
        if not _is_final(sc, end.end_step, end.end_time):
            last = dict(lead.last_capture)
            for point in points:
                last.update({s.name: point.end_step for s in point.due})
            planned = self.planner.plan_block(end.end_step, end.end_time, last, end.origin())
        hosts = self._to_host(result)
        seconds = _time.perf_counter() - started
        taken = sum(p.count for p in points)  # no conditions: every point is completed
        if taken:
            rate = taken / max(seconds, 1e-6)
            rates = self.planner.rate
            self.planner.rate = rate if rates is None else 0.5 * (rates + rate)
        pieces = [piece for p in points for piece in p.pieces()]
        times = {p.end_step: p.end_time for p in points}
        self.fields = result.fields
        lead.step, lead.time = points[-1].end_step, points[-1].end_time
        for point in points:
            for stream in point.due:
                lead.last_capture[stream.name] = point.end_step
        for m in np.flatnonzero(self.alive):
            run, host = self.runs[m], hosts[m]
            run.step, run.time = lead.step, lead.time
            if sc.check_finite and not bool(host["finite"]):
                run.fields = self._member(self.fields, m)
                try:
                    self.loops[m]._non_finite(self._member(start, m), start_step, start_time,
                                              pieces, host, times)
                except NonFiniteError as error:
                    self._stop(int(m), error)
                    continue
                run.fields = {}
            self.loops[m]._commit(host, times)
            run.writer.committed(run.step)
        return planned

    def _to_host(self, result: Any) -> list[dict[str, Any]]:
        """Each member's part of a block, as ``BlockLoop`` commits it: one device-to-host copy
        for the whole ensemble, cut on the host (a device slice of each new length would compile
        anew)."""
        small = self.backend.to_host({"counts": result.counts, "finite": result.finite})
        counts = small["counts"].reshape(len(self.runs), len(self.program.slots))
        buffers = [self.backend.to_host(slot_buffers) if counts[:, s].any() else {}
                   for s, slot_buffers in enumerate(result.buffers)]
        return [{"counts": counts[m], "finite": small["finite"][m], "fired": None,
                 "steps": None,
                 "buffers": [{name: b[m, :counts[m, s]] for name, b in slot.items()}
                             if counts[m, s] else {} for s, slot in enumerate(buffers)]}
                for m in range(len(self.runs))]

    def _member(self, fields: dict[str, Any], m: int) -> dict[str, Any]:
        return {name: value[m] for name, value in fields.items()}

    # -------------------------------------------------------------- endings

    def _stop(self, m: int, error: NonFiniteError) -> None:
        """End member ``m`` alone, as a run of its own ends on a non-finite value: its last good
        state becomes its final state and its file is marked non-finite."""
        run = self.runs[m]
        run.writer.final(run.step, run.time, self.backend.to_host(run.fields))
        run.writer.abort(failed(error, schema.STATUS_NON_FINITE))
        run.fields = {}
        self.alive[m] = False
        self.results[m] = error
        logger.error("member %d: %s", m, error)

    def _finish(self) -> None:
        lead = self.lead
        host = self.backend.to_host(self.fields)
        for m in np.flatnonzero(self.alive):
            run = self.runs[m]
            state = {name: np.array(value[m]) for name, value in host.items()}
            run.writer.final(lead.step, lead.time, state)
            path = run.writer.close({schema.ATTR_FINISHED: _now()})
            self.alive[m] = False
            self.results[m] = RunResult(path=path, state=state, step=lead.step, time=lead.time)
        logger.info("ensemble finished at step %d, time %g", lead.step, lead.time)

    def _abort(self, attrs: dict[str, str]) -> None:
        for m in np.flatnonzero(self.alive):
            self.runs[m].writer.abort(attrs)
            self.alive[m] = False


def _program_for(solver: Any, names: tuple[str, ...], seed: int, plan: RunPlan,
                 program: BlockProgram) -> Callable[[Any], BlockProgram]:
    """The block program of one member given its parameter row (traced values): the solver's
    stages, diagnostics and level conditions close over them as a run's close over constants."""
    # Level conditions only: conditions on a stage are refused with --vectorize.
    levels = tuple((s.schedule.diagnostic, s.schedule.above, s.schedule.below, None)
                   for s in plan.streams if isinstance(s.schedule, While))

    def program_for(row: Any) -> BlockProgram:
        member = with_params(solver, {n: row[i] for i, n in enumerate(names)})
        diagnostics = {d.name: d.fn for d in member.diagnostics()}
        level_fn = condition_flags(diagnostics, levels) if levels else None
        return dataclasses.replace(program, step=make_step(member, seed), staged=None,
                                   diagnostics=diagnostics, watch=None, levels=level_fn)

    return program_for

