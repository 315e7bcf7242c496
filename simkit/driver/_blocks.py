"""The run loop in blocks: the host plans the next capture points, the backend runs them as one
compiled call storing every due capture on the device, and the writer gets each stream's captures
of the block at once.

A block ends when its buffers are full, when its planned steps would take longer than the run's
durability lag, at a progress update, a cooldown's end or a wall-clock capture, when a watched
condition fires, or at the end of the run.
"""

from __future__ import annotations

import logging
import math
import time as _time
from dataclasses import dataclass
from typing import Any

import numpy as np

from simkit.backends._block import HELD, STEP, BlockPlan, BlockProgram, Slot
from simkit.driver._captures import check_diagnostic_shapes
from simkit.driver._replay import Piece, block_steps, check_finite, replay
from simkit.driver._run import held_slot, schedule_state
from simkit.driver._steps import conditions_for, solver_cached, step_for
from simkit.errors import NonFiniteError
from simkit.io import schema
from simkit.scenario import StreamPlan
from simkit.schedule import TIME_RTOL, Every, While, members

logger = logging.getLogger(__name__)

#: The most capture points in one block (the length of the block's plan arrays).
BLOCK_POINTS = 1024
#: Device memory the block buffers of one run may take (they are made anew for every block, so
#: a larger budget costs a larger fill per block, and the writer's queue holds a few blocks:
#: peak memory grows with it). 4 MiB holds the 1024 points of many scalar streams; a 512^2
#: float64 field gets two captures a block.
BLOCK_BYTES = 4 << 20


@dataclass
class _Point:
    """One capture point of a block: the steps up to it and the streams due there.

    A gap between two capture points may be cut by a block boundary (a progress update, a
    finiteness check, the durability lag); its pieces keep the gap's origin, so the times of its
    steps (``time + (offset + i) * dt``) and its shortened last step are those of the whole gap.
    """

    count: int
    dt: float
    last: float
    step: int  # step index of the point's first step
    time: float  # simulated time where the point's gap began
    offset: int  # steps of the gap taken before this point
    end_step: int
    end_time: float
    due: list[StreamPlan]
    cut: bool = False  # ends at a block boundary only: the next point continues the gap

    def origin(self) -> tuple[int, float]:
        """The gap origin ``(step, time)`` of the point after this one."""
        if self.cut:
            return self.step - self.offset, self.time
        return self.end_step, self.end_time

    def pieces(self, taken: int | None = None) -> list[Piece]:
        """The steps of this point (its first ``taken`` only, when given) as replay pieces."""
        if taken is not None and taken < self.count:
            return [Piece(taken, self.dt, self.time, self.offset, self.dt)] if taken else []
        if not self.count:
            return []
        return [Piece(self.count - 1, self.dt, self.time, self.offset, self.dt),
                Piece(1, self.last, self.time, self.offset + self.count - 1, self.dt)]


def build_program(run: Any, cache: Any = solver_cached) -> tuple[BlockProgram, Any]:
    """The static block program of ``run`` (its step, stage captures, diagnostics and slots) and
    what the backend runs it with: both kept in the solver cache, so a process that runs the
    same solver and outputs again compiles nothing new (and memory stays flat over many runs)."""
    plan = run.plan
    streams = list(plan.streams)
    levels = [(s.name, s.schedule) for s in streams if isinstance(s.schedule, While)]
    # Stages whose states a block keeps: those streams capture after and those conditions look
    # at (an edge condition on a stage: at every step).
    watch_staged = tuple(when.stage is not None for _, when in run.whens)
    stages = tuple(dict.fromkeys([s.stage for s in streams if s.stage is not None]
                                 + [w.stage for _, w in levels if w.stage is not None]
                                 + [w.stage for _, w in run.whens if w.stage is not None]))
    seed = plan.scenario.seed
    staged = step_for(plan.solver, seed, stages) if stages else None
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    sizes = run.sizes
    specs = list(plan.solver.fields()) + [p for st in plan.solver.stages() for p in st.probes]
    for spec in specs:
        shapes[spec.name] = (tuple(sizes[d] for d in spec.dims), plan.scenario.dtype)
    for diag in run.diagnostics.values():
        shapes[diag.name] = (tuple(sizes[d] for d in diag.dims), "float64")
    shapes[HELD] = ((len(run.whens),), "bool")
    points = BLOCK_POINTS
    per_capture = [sum(int(np.prod(shapes[n][0], dtype=np.int64)) * np.dtype(shapes[n][1]).itemsize
                       for n in s.fields + s.diagnostics) + 16 for s in streams]
    budget = BLOCK_BYTES // max(1, len(streams))
    level_index = {name: i for i, (name, _) in enumerate(levels)}
    # A checkpoint keeps whether each edge condition on a stage held at its step: a resume
    # cannot take that from the state.
    held = any(watch_staged)
    slots = tuple(Slot(s.name, s.stage, s.fields, s.diagnostics,
                       capacity=max(1, min(points, budget // per)),
                       level=level_index.get(s.name),
                       held=held and s.name in run.checkpoints,
                       inline=not s.fields and any(isinstance(m, Every) and m.every == 1
                                                   for m in members(s.schedule)))
                  for s, per in zip(streams, per_capture, strict=True))
    level_fn = (conditions_for(plan.solver, tuple((w.diagnostic, w.above, w.below, w.stage)
                                                  for _, w in levels)) if levels else None)
    diagnostics = {name: d.fn for name, d in run.diagnostics.items()}
    # Every diagnostic a stream keeps or a condition reads, tried once on the state it will be
    # taken of: a wrong shape, or a value the state does not hold, stops the run before a step.
    conditions = [w for _, w in levels] + [w for _, w in run.whens]
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
        _, seen = run.backend.call_step(staged, copy, plan.dt, run.step, run.time)
        for stage, names in at_stages.items():
            check_diagnostic_shapes(run, names, seen[stage], stage)
    backend = run.backend
    key = ("block", seed, backend.name, backend.device, plan.scenario.dtype,
           getattr(backend, "compile", None), stages, slots, points,
           tuple((m.diagnostic, m.above, m.below, m.stage) for _, m in run.whens),
           tuple((w.diagnostic, w.above, w.below, w.stage) for _, w in levels),
           tuple(sorted(shapes.items())))

    def make() -> tuple[BlockProgram, Any]:
        program = BlockProgram(run.step_fn, staged, diagnostics, slots, points, run.watch,
                               level_fn, shapes, watch_staged)
        return program, backend.block_runner(program)

    return cache(plan.solver, key, make)


class BlockLoop:
    """Plans, runs and commits the blocks of one run."""

    def __init__(self, run: Any, program: BlockProgram, runner: Any, flush_seconds: float,
                 chunk: int | None) -> None:
        self.run = run
        self.program = program
        self.flush_seconds = flush_seconds
        self.chunk = chunk
        self.rate: float | None = None  # steps per second, measured on the blocks so far
        self.index = {s.name: i for i, s in enumerate(run.plan.streams)}
        self.compiled = runner
        #: The next block, planned while the device computes the current one, with its start.
        self._next: tuple | None = None
        #: ``(step, origin)``: the run stands at ``step`` inside a gap cut by a block boundary,
        #: which began at ``origin = (step, time)``.
        self._gap: tuple[int, tuple[int, float]] | None = None
        #: The last block's start state, start step and the steps it took.
        self._taken: tuple[Any, int, list[Piece]] | None = None

    # -------------------------------------------------------------- planning

    def _next_point(self, step: int, time: float, last: dict[str, int], start: int,
                    origin: tuple[int, float]) -> tuple[_Point, bool]:
        """The next capture point after (step, time) in a block that starts at step ``start``
        (``origin``: where the current gap began), and whether the block must end there."""
        run, sc, dt = self.run, self.run.plan.scenario, self.run.plan.dt
        schedules = [s.schedule for s in run.plan.streams]
        targets = [s.next_step(step) for s in schedules]
        boundary = [when.resumes_at - 1 for _, when in run.whens]
        if sc.steps is not None:
            targets.append(sc.steps)
        if self.chunk is not None:
            boundary.append(start + self.chunk)
        if sc.check_finite:
            boundary.append(start + sc.check_finite)
        if run.walls:
            boundary.append(start + self._wall_steps())
        boundary = [b for b in boundary if b is not None and b > step]
        targets = [t for t in targets if t is not None and t > step]
        n_step = min(targets + boundary, default=None)
        origin_step, origin_time = origin
        offset = step - origin_step
        time_targets = [s.next_time(origin_time) for s in schedules] + [sc.until]
        target_time = min((t for t in time_targets if t is not None), default=None)
        k, last_dt = (steps_to_time(origin_time, target_time, dt) if target_time is not None
                      else (offset, dt))
        k -= offset
        if target_time is not None and (n_step is None or step + k <= n_step):
            point = _Point(k, dt, last_dt, step, origin_time, offset, step + k, target_time, [])
        else:
            n = n_step - step
            point = _Point(n, dt, dt, step, origin_time, offset, n_step,
                           origin_time + (offset + n) * dt, [],
                           cut=n_step not in targets)
        final = _is_final(sc, point.end_step, point.end_time)
        point.due = [s for s in run.plan.streams if last.get(s.name) != point.end_step
                     and (s.schedule.fires(point.end_step, point.end_time)
                          or (final and s.schedule.at_end))]
        ends = final or point.end_step in boundary
        return point, ends

    def _wall_steps(self) -> int:
        run = self.run
        left = min(wall.seconds_left() for _, wall in run.walls)
        return max(1, int((self.rate or 0.0) * left))

    def plan_block(self, start: int, start_time: float, last: dict[str, int],
                   origin: tuple[int, float] | None = None) -> tuple[BlockPlan, list[_Point]]:
        """The block that starts at step ``start`` (``last``: each stream's last captured step,
        updated with the block's captures; ``origin``: where the gap the block starts in began,
        when a block boundary cut it)."""
        run, program = self.run, self.program
        plan = BlockPlan.empty(program.points, len(program.slots), len(run.whens))
        plan.enabled = np.array([when.may_fire(start + 1) for _, when in run.whens],
                                dtype=bool)
        plan.held = np.array([when.held for _, when in run.whens], dtype=bool)
        budget = (max(1, int(self.rate * self.flush_seconds)) if self.rate
                  else 64)  # the first block is short: it measures the rate
        step, time = start, start_time
        origin = origin or (start, start_time)
        counts = [0] * len(program.slots)
        points: list[_Point] = []
        while len(points) < program.points:
            point, ends = self._next_point(step, time, last, start, origin)
            slots = [self.index[s.name] for s in point.due]
            if any(counts[i] + 1 > program.slots[i].capacity for i in slots):
                break
            k = len(points)
            plan.counts[k], plan.dts[k], plan.last_dts[k] = point.count, point.dt, point.last
            plan.steps[k], plan.times[k], plan.offsets[k] = point.step, point.time, point.offset
            for i in slots:
                plan.due[k, i] = True
                counts[i] += 1
            for s in point.due:
                last[s.name] = point.end_step
            points.append(point)
            step, time, origin = point.end_step, point.end_time, point.origin()
            if ends or step - start >= budget:
                break
        plan.used = len(points)
        return plan, points

    def drop_plan(self) -> None:
        """Forget the block planned ahead (a schedule's state changed between blocks)."""
        self._next = None

    # -------------------------------------------------------------- running

    def run_block(self) -> np.ndarray | None:
        """Plan, run and commit one block; returns the conditions that fired, if any."""
        if not self.run.plan.scenario.check_finite:
            return self._run_block()
        # The finiteness check names the step, stage and field of an overflow: NumPy's own
        # warnings about it would only come first and say less.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._run_block()

    def _run_block(self) -> np.ndarray | None:
        run = self.run
        planned, self._next = self._next, None
        if planned is None or planned[0] != (run.step, run.time):
            gap = self._gap[1] if self._gap is not None and self._gap[0] == run.step else None
            planned = (run.step, run.time), self.plan_block(run.step, run.time,
                                                            dict(run.last_capture), gap)
        plan, points = planned[1]
        start, start_step, start_time = run.fields, run.step, run.time
        started = _time.perf_counter()
        result = run.backend.run_block(self.compiled, run.fields, plan)
        # While the device computes, the host plans the next block as if this one ends as
        # planned (a fired condition or a non-finite state drops that plan).
        if points and not _is_final(run.plan.scenario, points[-1].end_step, points[-1].end_time):
            last = dict(run.last_capture)
            for point in points:
                last.update({s.name: point.end_step for s in point.due})
            end = (points[-1].end_step, points[-1].end_time)
            self._next = end, self.plan_block(*end, last, points[-1].origin())
        host = run.backend.block_to_host(result)
        seconds = _time.perf_counter() - started
        taken = int(host["steps"])
        if taken:
            rate = taken / max(seconds, 1e-6)
            self.rate = rate if self.rate is None else 0.5 * (self.rate + rate)
            self.rate = run.backend.agree(self.rate)  # every process plans the same blocks
        # Where the block stopped: a point's end, or inside a gap when a condition fired there.
        step, time, done = start_step, start_time, 0
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
        times = {p.end_step: p.end_time for p in points}
        run.fields, run.step, run.time = result.fields, step, time
        self._taken = (start, start_step, pieces)
        if run.plan.scenario.check_finite and not bool(host["finite"]):
            self._non_finite(start, start_step, start_time, pieces, host, times)
        fired = host["fired"]
        fired = fired if fired is not None and fired.size and fired.any() else None
        states = None
        if fired is not None:  # a firing starts its cooldown at the step it fired at
            # and, a capture, a new gap there (as a resume from it would), wherever the block
            # that saw it was cut
            self._gap = None
            before = schedule_state(run)
            for j in np.flatnonzero(fired):
                run.whens[j][1].fired(run.step)
            # Checkpoints before that step keep the schedules' state from before the firing,
            # one at that step the state after it: a resume from either fires where this does.
            states = (before, schedule_state(run), run.step)
        self._commit(host, times, states=states)
        if host["held"] is not None:  # the memory of conditions on stages goes on
            for (_, when), held in zip(run.whens, np.asarray(host["held"]), strict=True):
                when.hold(bool(held))
            if self._next is not None:  # planned before this block's memory was known
                self._next[1][0].held = np.array([when.held for _, when in run.whens],
                                                 dtype=bool)
        if fired is not None:
            self._next = None  # the schedules' state changes with the firing
        return fired

    def has_taken_steps(self) -> bool:
        """Whether a block has taken steps (so ``last_step_stages`` has a step to retake)."""
        return self._taken is not None and any(piece.count for piece in self._taken[2])

    def last_step_stages(self, staged: Any) -> dict[str, Any]:
        """The states right after the stages of the run's last step, retaken from the last
        block's start with ``staged`` (a step that also returns them): for captures a block
        could not plan, as a stage stream's last capture when a condition ends the run."""
        run = self.run
        fields, step, pieces = self._taken
        *_, (dt, time) = block_steps(pieces)
        last = step + sum(piece.count for piece in pieces) - 1
        fields = replay(run, fields, step, pieces, last)
        return run.backend.call_step(staged, fields, dt, last, time)[1]

    def _commit(self, host: dict[str, Any], times: dict[int, float], upto: int | None = None,
                states: tuple[Any, Any, int] | None = None) -> None:
        """Hand every stream's captures of the block to the writer (those up to ``upto``);
        checkpoints keep the schedules' state: ``states`` = (before, after, step) gives the
        state after a firing to the checkpoint at its step, else the state now serves all."""
        run = self.run
        blocks = []
        for slot, buffers, count in zip(self.program.slots, host["buffers"], host["counts"],
                                        strict=True):
            count = int(count)
            if not count:
                continue
            steps = buffers[STEP][:count]
            if upto is not None:
                count = int(np.searchsorted(steps, upto, side="right"))
                steps = steps[:count]
                if not count:
                    continue
            arrays = {name: buffers[name][:count] for name in slot.fields + slot.diagnostics}
            if slot.stream in run.checkpoints and run.state_slots:
                if states is None:  # no firing: the state now serves every capture
                    now = schedule_state(run)
                    states = (now, now, -1)
                before, after, fired_at = states
                state = np.broadcast_to(before, (count, len(before))).copy()
                state[steps == fired_at] = after
                if slot.held:  # as each condition on a stage stood at each captured step
                    for j, column in self._held_columns():
                        state[:, column] = buffers[HELD][:count, j]
                arrays[schema.SCHEDULE_STATE] = state
            step_list = [int(s) for s in steps]
            blocks.append((slot.stream, step_list, [times[s] for s in step_list], arrays))
            run.last_capture[slot.stream] = step_list[-1]
        if blocks:  # one write, one sync, whatever the number of streams
            run.writer.capture_blocks(blocks)

    def _held_columns(self) -> list[tuple[int, int]]:
        """``(condition, column)``: where each edge condition on a stage keeps its memory in
        the schedules' saved state."""
        run = self.run
        return [(j, run.state_slots.index(held_slot(run.plan, when)))
                for j, (_, when) in enumerate(run.whens) if when.stage is not None]

    def _non_finite(self, start: Any, start_step: int, start_time: float,
                    pieces: list[Piece], host: dict[str, Any],
                    times: dict[int, float]) -> None:
        """Name the step, stage and field (or the captured value) where the block first went
        non-finite, commit the good captures before it, and raise NonFiniteError.

        A finite state may still give a non-finite captured value (a reduction that overflows);
        whichever comes first ends the run, with the state it came from as the final state."""
        run = self.run
        bad_step, bad_name = _first_bad_capture(self.program, host)
        try:
            check_finite(run, start, start_step, pieces)
        except NonFiniteError:
            # run.step: the last good state, kept as the final state.
            if bad_step is None or bad_step > run.step:
                self._commit(host, times, upto=run.step)
                raise
        if bad_step is None:
            return
        self._commit(host, times, upto=bad_step - 1)
        # The state the bad value came from becomes the final state: replayed up to its step.
        fields = replay(run, start, start_step, pieces, bad_step)
        run.fields, run.step, run.time = fields, bad_step, times[bad_step]
        raise NonFiniteError(
            f"non-finite value in {bad_name} captured at step {bad_step}; the captures before "
            f"it are kept in {run.writer.partial_path}")


def _first_bad_capture(program: BlockProgram, host: dict[str, Any]
                       ) -> tuple[int | None, str | None]:
    """The first step at which a block captured a non-finite value, and the value's name (with
    the stage it was captured after, if any)."""
    bad_step, bad_name = None, None
    for slot, buffers, count in zip(program.slots, host["buffers"], host["counts"], strict=True):
        if not int(count):
            continue  # nothing stored (and nothing copied to the host)
        for name in slot.fields + slot.diagnostics:
            values = np.asarray(buffers[name][:int(count)])
            if not np.issubdtype(values.dtype, np.inexact):
                continue
            rows = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
            if rows.any():
                step = int(buffers[STEP][int(np.argmax(rows))])
                if bad_step is None or step < bad_step:
                    bad_step, bad_name = step, repr(name) + (
                        f" after stage {slot.stage!r}" if slot.stage is not None else "")
    return bad_step, bad_name


def steps_to_time(time: float, target: float, dt: float) -> tuple[int, float]:
    """Steps needed to go from ``time`` to ``target`` with step ``dt``, and the length of the last
    one (shortened so the run lands exactly on ``target``)."""
    remaining = target - time
    k = max(1, math.ceil(remaining / dt - TIME_RTOL))
    last = remaining - (k - 1) * dt
    if abs(last - dt) <= TIME_RTOL * dt:
        last = dt
    return k, last


def _is_final(sc: Any, step: int, time: float) -> bool:
    return ((sc.steps is not None and step >= sc.steps)
            or (sc.until is not None and time >= sc.until))
