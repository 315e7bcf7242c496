"""Planning a run's blocks on the host: the capture points of the next block (the steps up to
each, the streams due there) from the run's schedules and their state, cut where a block must
end (buffers full, the durability lag, a progress update, a cooldown's end, a wall-clock
capture, a finiteness check, the end of the run)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simkit.backends._block import BlockPlan, BlockProgram
from simkit.driver._replay import Piece
from simkit.driver._run import Run
from simkit.scenario import Scenario, StreamPlan
from simkit.schedule import TIME_RTOL


@dataclass
class Point:
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


class BlockPlanner:
    """Plans the blocks of a run (or of ensemble members, which share their schedules) for a
    block program: as many capture points as its buffers hold, and as many steps as take about
    ``flush_seconds`` at the step rate measured so far."""

    def __init__(self, program: BlockProgram, flush_seconds: float, chunk: int | None) -> None:
        self.program = program
        self.flush_seconds = flush_seconds
        self.chunk = chunk
        self.rate: float | None = None  # steps per second, measured on the blocks so far
        self.index = {slot.stream: i for i, slot in enumerate(program.slots)}

    def measured(self, steps: int, seconds: float) -> float:
        """Take a block of ``steps`` steps that took ``seconds`` into the step rate (returned)."""
        rate = steps / max(seconds, 1e-6)
        self.rate = rate if self.rate is None else 0.5 * (self.rate + rate)
        return self.rate

    def start_block(self, run: Run) -> tuple[BlockPlan, list[Point]]:
        """A block of one point of no steps: the captures of the state the run starts from,
        taken on the device like every other capture."""
        sc = run.plan.scenario
        plan = BlockPlan.empty(self.program.points, len(self.program.slots), 0)
        final = is_final(sc, run.step, run.time)
        due = [s for s in run.plan.streams
               if s.schedule.fires_at(run.step, run.time, final)]
        plan.steps[0], plan.times[0], plan.used = run.step, run.time, 1
        for stream in due:
            plan.due[0, self.index[stream.name]] = True
        return plan, [Point(0, 0.0, 0.0, run.step, run.time, 0, run.step, run.time, due)]

    def _next_point(self, run: Run, step: int, time: float, last: dict[str, int], start: int,
                    origin: tuple[int, float]) -> tuple[Point, bool]:
        """The next capture point after (step, time) in a block that starts at step ``start``
        (``origin``: where the current gap began), and whether the block must end there."""
        sc, dt = run.plan.scenario, run.plan.dt
        schedules = [s.schedule for s in run.plan.streams]
        found = [s.next_step(step) for s in schedules]
        boundary = [when.state.resumes_at - 1 for when in run.whens]
        if sc.steps is not None:
            found.append(sc.steps)
        if self.chunk is not None:
            boundary.append(start + self.chunk)
        if sc.check_finite:
            boundary.append(start + sc.check_finite)
        if run.walls:
            boundary.append(start + self._wall_steps(run))
        boundary = [b for b in boundary if b > step]
        targets = [t for t in found if t is not None and t > step]
        n_step = min(targets + boundary, default=None)
        origin_step, origin_time = origin
        offset = step - origin_step
        time_targets = [s.next_time(origin_time) for s in schedules] + [sc.until]
        target_time = min((t for t in time_targets if t is not None), default=None)
        k, last_dt = (steps_to_time(origin_time, target_time, dt) if target_time is not None
                      else (offset, dt))
        k -= offset
        if target_time is not None and (n_step is None or step + k <= n_step):
            point = Point(k, dt, last_dt, step, origin_time, offset, step + k, target_time, [])
        else:
            assert n_step is not None  # a run ends at a step count or a simulated time
            n = n_step - step
            point = Point(n, dt, dt, step, origin_time, offset, n_step,
                           origin_time + (offset + n) * dt, [],
                           cut=n_step not in targets)
        final = is_final(sc, point.end_step, point.end_time)
        point.due = [s for s in run.plan.streams if last.get(s.name) != point.end_step
                     and s.schedule.fires_at(point.end_step, point.end_time, final)]
        ends = final or point.end_step in boundary
        return point, ends

    def _wall_steps(self, run: Run) -> int:
        left = min(wall.state.seconds_left() for wall in run.walls)
        return max(1, int((self.rate or 0.0) * left))

    def plan_block(self, run: Run, start: int, start_time: float, last: dict[str, int],
                   origin: tuple[int, float] | None = None) -> tuple[BlockPlan, list[Point]]:
        """The block that starts at step ``start`` (``last``: each stream's last captured step,
        updated with the block's captures; ``origin``: where the gap the block starts in began,
        when a block boundary cut it)."""
        program = self.program
        plan = BlockPlan.empty(program.points, len(program.slots), len(run.whens))
        plan.enabled = np.array([when.state.may_fire(start + 1) for when in run.whens],
                                dtype=bool)
        plan.held = np.array([when.state.held for when in run.whens], dtype=bool)
        budget = (max(1, int(self.rate * self.flush_seconds)) if self.rate
                  else 64)  # the first block is short: it measures the rate
        step, time = start, start_time
        origin = origin or (start, start_time)
        counts = [0] * len(program.slots)
        points: list[Point] = []
        while len(points) < program.points:
            point, ends = self._next_point(run, step, time, last, start, origin)
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


def steps_to_time(time: float, target: float, dt: float) -> tuple[int, float]:
    """Steps needed to go from ``time`` to ``target`` with step ``dt``, and the length of the last
    one (shortened so the run lands exactly on ``target``)."""
    remaining = target - time
    k = max(1, math.ceil(remaining / dt - TIME_RTOL))
    last = remaining - (k - 1) * dt
    if abs(last - dt) <= TIME_RTOL * dt:
        last = dt
    return k, last


def is_final(sc: Scenario, step: int, time: float) -> bool:
    return ((sc.steps is not None and step >= sc.steps)
            or (sc.until is not None and time >= sc.until))
