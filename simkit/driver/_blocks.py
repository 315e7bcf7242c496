"""The run loop in blocks: the host plans the next capture points (``_plan``), the backend runs
them as one compiled call storing every due capture on the device, and the writer gets each
stream's captures of the block at once (``_commit``). Ensemble members take the same loop along
a member axis (``Lanes``).

A block ends when its buffers are full, when its planned steps would take longer than the run's
durability lag, at a progress update, a cooldown's end or a wall-clock capture, when a watched
condition fires, or at the end of the run.
"""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from simkit.backends._block import HELD, BlockPlan, BlockProgram, Slot
from simkit.driver._captures import check_diagnostic_shapes
from simkit.driver._commit import commit, non_finite
from simkit.driver._plan import BlockPlanner, Point, is_final
from simkit.driver._plan import steps_to_time as steps_to_time
from simkit.driver._replay import Piece, block_steps, replay
from simkit.driver._run import Run, schedule_state
from simkit.driver._steps import conditions_for, solver_cached, step_for
from simkit.errors import NonFiniteError
from simkit.schedule import Condition

logger = logging.getLogger(__name__)

#: The most capture points in one block (the length of the block's plan arrays).
BLOCK_POINTS = 1024
#: Device memory the block buffers of one run may take (they are made anew for every block, so
#: a larger budget costs a larger fill per block, and the writer's queue holds a few blocks:
#: peak memory grows with it). 4 MiB holds the 1024 points of many scalar streams; a 512^2
#: float64 field gets two captures a block by this budget, and more by ``BLOCK_CAPTURES``.
BLOCK_BYTES = 4 << 20
#: Captures a stream's buffers hold at least, where they fit in ``BLOCK_STRETCH`` times
#: ``BLOCK_BYTES`` (64 MiB): every block costs a wait for the device, a copy to the host and a
#: sync of the file, so a block of two large fields paid those per two captures (512^2 float64
#: every 10 steps: a block, and an fsync, every 20 steps).
BLOCK_CAPTURES = 8
BLOCK_STRETCH = 16


#: Where a block program is kept: ``cache(solver, key, make)`` (``solver_cached``).
ProgramCache = Callable[[Any, tuple[object, ...], Callable[[], Any]], Any]


def capture_bytes(shapes: Mapping[str, tuple[tuple[int, ...], Any]], names: Sequence[str]
                  ) -> int:
    """The bytes one capture of ``names`` takes in a block (``shapes``: each name's shape and
    dtype), with its step and time."""
    return sum(int(np.prod(shapes[n][0], dtype=np.int64)) * int(np.dtype(shapes[n][1]).itemsize)
               for n in names) + 16


def block_capacity(per_capture: int, streams: int, points: int) -> int:
    """The captures one of ``streams`` streams keeps in a block's buffers, each capture of
    ``per_capture`` bytes: what ``BLOCK_BYTES`` shared by the streams holds, at least
    ``BLOCK_CAPTURES`` where ``BLOCK_STRETCH`` times that holds them, at least one, at most
    ``points``."""
    share = max(1, streams)
    fit = BLOCK_BYTES // share // per_capture
    at_least = min(BLOCK_CAPTURES, BLOCK_STRETCH * BLOCK_BYTES // share // per_capture)
    return max(1, min(points, max(fit, at_least)))


def build_program(run: Run, cache: ProgramCache = solver_cached) -> tuple[BlockProgram, Any]:
    """The static block program of ``run`` (its step, stage captures, diagnostics and slots) and
    what the backend runs it with: both kept in the solver cache, so a process that runs the
    same solver and outputs again compiles nothing new (and memory stays flat over many runs)."""
    plan = run.plan
    streams = list(plan.streams)
    levels = [(s.name, s.schedule.level) for s in streams if s.schedule.level is not None]
    edges = [w.condition for w in run.whens]
    # Stages whose states a block keeps: those streams capture after and those conditions look
    # at (an edge condition on a stage: at every step).
    watch_staged = tuple(edge.stage is not None for edge in edges)
    stages = tuple(dict.fromkeys([s.stage for s in streams if s.stage is not None]
                                 + [w.stage for _, w in levels if w.stage is not None]
                                 + [w.stage for w in edges if w.stage is not None]))
    seed = plan.scenario.seed
    staged = step_for(plan.solver, seed, stages) if stages else None
    shapes = _shapes(run)
    points = BLOCK_POINTS
    per_capture = [capture_bytes(shapes, s.fields + s.diagnostics) for s in streams]
    level_index = {name: i for i, (name, _) in enumerate(levels)}
    # A checkpoint keeps whether each edge condition on a stage held at its step: a resume
    # cannot take that from the state.
    held = any(watch_staged)
    slots = tuple(Slot(s.name, s.stage, s.fields, s.diagnostics,
                       capacity=block_capacity(per, len(streams), points),
                       level=level_index.get(s.name),
                       held=held and s.name in run.checkpoints,
                       inline=not s.fields and s.schedule.every_step)
                  for s, per in zip(streams, per_capture, strict=True))
    level_fn = (conditions_for(plan.solver, tuple(w.key for _, w in levels)) if levels
                else None)
    diagnostics = {name: d.fn for name, d in run.diagnostics.items()}
    _check_diagnostics(run, [w for _, w in levels] + edges, staged)
    backend = run.backend
    key = ("block", seed, backend.name, backend.device, plan.scenario.dtype,
           getattr(backend, "compile", None), stages, slots, points,
           tuple(w.key for w in edges), tuple(w.key for _, w in levels),
           tuple(sorted(shapes.items())))

    def make() -> tuple[BlockProgram, Any]:
        program = BlockProgram(run.step_fn, staged, diagnostics, slots, points, run.watch,
                               level_fn, shapes, watch_staged)
        return program, backend.block_runner(program)

    found: tuple[BlockProgram, Any] = cache(plan.solver, key, make)
    return found


def _shapes(run: Run) -> dict[str, tuple[tuple[int, ...], str]]:
    """The shape and dtype of everything a block may store: fields, probes, diagnostics, and
    whether each edge condition held (``HELD``)."""
    plan, dtype = run.plan, run.plan.scenario.dtype
    shapes: dict[str, tuple[tuple[int, ...], str]] = {
        name: (plan.shapes[name], dtype) for name in plan.field_names + plan.probe_names}
    shapes.update({name: (plan.shapes[name], "float64") for name in plan.diagnostic_names})
    shapes[HELD] = ((len(run.whens),), "bool")
    return shapes


def _check_diagnostics(run: Run, conditions: list[Condition], staged: Any) -> None:
    """Every diagnostic a stream keeps or a condition reads, tried once on the state it will be
    taken of: a wrong shape, or a value the state does not hold, stops the run before a step
    (``staged``: the step that also returns the states right after stages)."""
    streams = run.plan.streams
    check_diagnostic_shapes(run, {n for s in streams if s.stage is None for n in s.diagnostics}
                            | {w.diagnostic for w in conditions if w.stage is None})
    at_stages: dict[str, set[str]] = {}
    for s in streams:
        if s.stage is not None and s.diagnostics:
            at_stages.setdefault(s.stage, set()).update(s.diagnostics)
    for w in conditions:
        if w.stage is not None:
            at_stages.setdefault(w.stage, set()).add(w.diagnostic)
    if at_stages:  # evaluated on a stage's state: one step taken aside, from a copy
        copy = {name: run.backend.asarray(value)
                for name, value in run.backend.to_host(run.fields).items()}
        _, seen = run.backend.call_step(staged, copy, run.plan.dt, run.step, run.time)
        for stage, names in at_stages.items():
            check_diagnostic_shapes(run, names, seen[stage], stage)


class Lanes(Protocol):
    """How the runs of a block loop take a block on the device: one run, or the members of an
    ensemble along the leading axis of one batched state."""

    def state(self) -> Any:
        """The device state the next block starts from."""
        ...

    def launch(self, plan: BlockPlan) -> Any:
        """Start the block ``plan`` on the device from ``state()``; its result."""
        ...

    def to_host(self, result: Any) -> list[dict[str, Any]]:
        """Each run's part of a block's result on the host (buffers, counts, flags)."""
        ...

    def advance(self, result: Any) -> None:
        """Make the block's end state the state the next block starts from."""
        ...

    def member(self, state: Any, m: int) -> Any:
        """Run ``m``'s part of a device state."""
        ...

    def release(self, m: int) -> None:
        """Drop what run ``m`` holds of the state apart from the others."""
        ...


class OneRun:
    """The lanes of a single run: its own state, one block program call per block."""

    def __init__(self, run: Run, runner: Any) -> None:
        self.run, self.runner = run, runner

    def state(self) -> Any:
        return self.run.fields

    def launch(self, plan: BlockPlan) -> Any:
        return self.run.backend.run_block(self.runner, self.run.fields, plan)

    def to_host(self, result: Any) -> list[dict[str, Any]]:
        return [self.run.backend.block_to_host(result)]

    def advance(self, result: Any) -> None:
        self.run.fields = result.fields

    def member(self, state: Any, m: int) -> Any:
        return state

    def release(self, m: int) -> None:
        pass


#: Called with a member and the error that stopped it, where members stop alone.
StopMember = Callable[[int, NonFiniteError], None]


class BlockLoop:
    """Plans, runs and commits the blocks of one run, or of ensemble members that share their
    schedules and step together (``runs``, stepped by ``lanes``).

    Args:
        stop_member: where members stop alone, what ends member ``m`` whose state turned
            non-finite (its run holds its last good state); else the error is raised.
    """

    def __init__(self, runs: list[Run], program: BlockProgram, lanes: Lanes,
                 flush_seconds: float, chunk: int | None,
                 stop_member: StopMember | None = None) -> None:
        self.runs = runs
        self.program = program
        self.lanes = lanes
        self.planner = BlockPlanner(program, flush_seconds, chunk)
        self.stop_member = stop_member
        #: Which runs go on (a member whose state turned non-finite stops alone).
        self.alive = np.ones(len(runs), dtype=bool)
        #: The next block, planned while the device computes the current one, with its start.
        self._next: tuple[tuple[int, float], tuple[BlockPlan, list[Point]]] | None = None
        #: ``(step, origin)``: the run stands at ``step`` inside a gap cut by a block boundary,
        #: which began at ``origin = (step, time)``.
        self._gap: tuple[int, tuple[int, float]] | None = None
        #: The last block's start state, start step and the steps it took.
        self._taken: tuple[Any, int, list[Piece]] | None = None

    @property
    def run(self) -> Run:
        """The run whose schedules plan the blocks: the first that goes on (all share them)."""
        return self.runs[int(np.argmax(self.alive))]

    def drop_plan(self) -> None:
        """Forget the block planned ahead (a schedule's state changed between blocks)."""
        self._next = None

    # -------------------------------------------------------------- running

    def capture_start(self) -> None:
        """Capture the state the runs start from on the device, as a block of no steps."""
        run = self.run
        plan, points = self.planner.start_block(run)
        if points[0].due:
            self._next = (run.step, run.time), (plan, points)
            self.run_block()

    def run_block(self) -> np.ndarray | None:
        """Plan, run and commit one block; returns the conditions that fired, if any."""
        if not self.run.plan.scenario.check_finite:
            return self._run_block()
        # The finiteness check names the step, stage and field of an overflow: NumPy's own
        # warnings about it would only come first and say less.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._run_block()

    def _planned(self, run: Run) -> tuple[BlockPlan, list[Point]]:
        """The block that starts where ``run`` stands: the one planned ahead, if it does."""
        planned, self._next = self._next, None
        if planned is not None and planned[0] == (run.step, run.time):
            return planned[1]
        gap = self._gap[1] if self._gap is not None and self._gap[0] == run.step else None
        return self.planner.plan_block(run, run.step, run.time, dict(run.last_capture), gap)

    def _plan_ahead(self, run: Run, points: list[Point]) -> None:
        """While the device computes, plan the next block as if this one ends as planned (a
        fired condition or a non-finite state drops that plan)."""
        if not points or is_final(run.plan.scenario, points[-1].end_step, points[-1].end_time):
            return
        last = dict(run.last_capture)
        for point in points:
            last.update({s.name: point.end_step for s in point.due})
        end = (points[-1].end_step, points[-1].end_time)
        self._next = end, self.planner.plan_block(run, *end, last, points[-1].origin())

    def _stopped_at(self, points: list[Point], taken: int, step: int, time: float
                    ) -> tuple[int, float, list[Piece]]:
        """Where a block from ``(step, time)`` that took ``taken`` steps stopped (a point's
        end, or inside a gap when a condition fired there), and the steps it took."""
        done = 0
        pieces: list[Piece] = []
        self._gap = None
        for point in points:
            pieces += point.pieces(taken - done)
            if done + point.count <= taken:
                done += point.count
                step, time = point.end_step, point.end_time
                self._gap = (step, point.origin()) if point.cut else None
                continue
            inside = taken - done
            if inside:  # a condition fired inside the gap: a capture there ends the gap
                step, time = point.step + inside, point.time + (point.offset + inside) * point.dt
            break
        return step, time, pieces

    def _run_block(self) -> np.ndarray | None:
        run = self.run
        plan, points = self._planned(run)
        start, start_step, start_time = self.lanes.state(), run.step, run.time
        started = _time.perf_counter()
        result = self.lanes.launch(plan)
        self._plan_ahead(run, points)
        hosts = self.lanes.to_host(result)
        seconds = _time.perf_counter() - started
        # Members have no conditions: every point of their block is completed.
        steps = hosts[0]["steps"]
        taken = sum(p.count for p in points) if steps is None else int(steps)
        if taken:  # every process of a run plans the same blocks
            self.planner.rate = run.backend.agree(self.planner.measured(taken, seconds))
        step, time, pieces = self._stopped_at(points, taken, start_step, start_time)
        times = {p.end_step: p.end_time for p in points}
        self.lanes.advance(result)
        self._taken = (start, start_step, pieces)
        fired = None
        for m in np.flatnonzero(self.alive):
            fired_here = self._end_block(int(m), hosts[m], (start, start_step, pieces), times,
                                         step, time)
            fired = fired_here if fired is None else fired
        if fired is not None:
            # A firing starts a new gap at its step (as a resume from it would), wherever the
            # block that saw it was cut; the schedules' state changes with it.
            self._gap = self._next = None
        elif hosts[0]["held"] is not None and self._next is not None:
            # Planned before this block's memory of conditions on stages was known.
            self._next[1][0].held = np.array([w.state.held for w in self.run.whens], dtype=bool)
        return fired

    def _end_block(self, m: int, host: dict[str, Any], taken: tuple[Any, int, list[Piece]],
                   times: dict[int, float], step: int, time: float) -> np.ndarray | None:
        """Run ``m`` at the end of a block: its position, a non-finite state located, its
        conditions that fired (returned), their memory, its captures committed."""
        run = self.runs[m]
        run.step, run.time = step, time
        if run.plan.scenario.check_finite and not bool(host["finite"]):
            start, start_step, pieces = taken
            run.fields = self.lanes.member(self.lanes.state(), m)
            try:
                non_finite(run, self.program, self.lanes.member(start, m), start_step, pieces,
                           host, times)
            except NonFiniteError as error:
                if self.stop_member is None:
                    raise
                self.stop_member(m, error)
                self.alive[m] = False
                return None
            self.lanes.release(m)
        fired = host["fired"]
        fired = fired if fired is not None and fired.size and fired.any() else None
        states = None
        if fired is not None:  # a firing starts its cooldown at the step it fired at
            before = schedule_state(run)
            for j in np.flatnonzero(fired):
                run.whens[j].state.fired(run.step)
            # Checkpoints before that step keep the schedules' state from before the firing,
            # one at that step the state after it: a resume from either fires where this does.
            after = schedule_state(run)
            assert before is not None and after is not None  # a condition keeps a cooldown
            states = (before, after, run.step)
        commit(run, self.program, host, times, states=states)
        if host["held"] is not None:  # the memory of conditions on stages goes on
            for when, held in zip(run.whens, np.asarray(host["held"]), strict=True):
                when.state.hold(bool(held))
        return fired

    def has_taken_steps(self) -> bool:
        """Whether a block has taken steps (so ``last_step_stages`` has a step to retake)."""
        return self._taken is not None and any(piece.count for piece in self._taken[2])

    def last_step_stages(self, staged: Any) -> dict[str, Any]:
        """The states right after the stages of the run's last step, retaken from the last
        block's start with ``staged`` (a step that also returns them): for captures a block
        could not plan, as a stage stream's last capture when a condition ends the run."""
        run = self.run
        assert self._taken is not None  # has_taken_steps()
        fields, step, pieces = self._taken
        *_, (dt, time) = block_steps(pieces)
        last = step + sum(piece.count for piece in pieces) - 1
        fields = replay(run, fields, step, pieces, last)
        seen: dict[str, Any] = run.backend.call_step(staged, fields, dt, last, time)[1]
        return seen
