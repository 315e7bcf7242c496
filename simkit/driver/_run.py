"""One run as it advances: its plan, backend, writer and state, and the state of its schedules
(cooldowns, edge memory, wall-clock deadlines), saved with checkpoints and restored from them;
where a resume starts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from simkit.backends import AbstractBackend
from simkit.driver._buffers import HostBuffers
from simkit.driver._steps import conditions_for, diagnostics_for, step_for
from simkit.io import CaptureWriter
from simkit.scenario import RunPlan, StreamPlan
from simkit.schedule import AbstractSchedule, ClockState, Condition, EdgeState, ScheduleState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Watched:
    """An edge condition the run watches on the device: the stream it captures for (None: it
    ends the run), the condition, its state, and the slot keeping its memory of a stage."""

    stream: StreamPlan | None
    condition: Condition
    state: EdgeState
    held_slot: str


@dataclass(frozen=True)
class Clocked:
    """A wall-clock schedule of a stream, with its state."""

    stream: StreamPlan
    state: ClockState


def schedules(plan: RunPlan) -> dict[str, AbstractSchedule]:
    """Every schedule of the run, by the scenario key it came from."""
    found: dict[str, AbstractSchedule] = {f"outputs.{s.name}": s.schedule for s in plan.streams}
    if plan.stop_when is not None:
        found["stop_when"] = plan.stop_when
    return found


def state_slots(plan: RunPlan) -> tuple[str, ...]:
    """The names under which checkpoints keep the state of the run's schedules."""
    return tuple(save_schedules({key: schedule.init_state()
                                 for key, schedule in schedules(plan).items()}))


def save_schedules(states: Mapping[str, ScheduleState]) -> dict[str, float]:
    """The state of every schedule of a run (cooldowns, deadlines), flat, by slot name."""
    return {f"{key}.{name}": value for key, state in states.items()
            for name, value in state.save().items()}


def restore_schedules(states: Mapping[str, ScheduleState],
                      saved: Mapping[str, float] | None) -> None:
    """Give every schedule state of a run the state ``save_schedules`` saved (None: a fresh
    start).

    Raises:
        ValueError: ``saved`` names slots other than the run's.
    """
    for state in states.values():
        state.reset()
    if saved is None:
        return
    slots = save_schedules(states)
    unknown = sorted(set(saved) - set(slots))
    if unknown:
        raise ValueError(f"schedule state: expected slots of this run's schedules "
                         f"({', '.join(slots)}), given {', '.join(unknown)}")
    for key, state in states.items():
        prefix = f"{key}."
        state.restore({name.removeprefix(prefix): value for name, value in saved.items()
                       if name.startswith(prefix)})


def schedule_state(run: Run) -> np.ndarray | None:
    """The schedules' state now as checkpoints keep it, one number per slot of
    ``run.state_slots`` (None when the run's schedules keep none)."""
    if not run.state_slots:
        return None
    saved = save_schedules(run.schedule_states)
    return np.array([saved[slot] for slot in run.state_slots], dtype=np.float64)


def _watched(plan: RunPlan, states: Mapping[str, ScheduleState]
             ) -> tuple[list[Watched], list[Clocked]]:
    """The edge conditions and wall clocks of the run's schedules, with their states."""
    streams: dict[str, StreamPlan | None] = {f"outputs.{s.name}": s for s in plan.streams}
    streams["stop_when"] = None
    whens: list[Watched] = []
    walls: list[Clocked] = []
    for key, schedule in schedules(plan).items():
        parts = schedule.members()
        for i, member in enumerate(parts):
            stream = streams[key]
            if member.edge is not None:
                alone = len(parts) == 1 and parts[0] is schedule  # not a union
                slot = f"{key}.held" if alone else f"{key}.{i}.held"
                whens.append(Watched(stream, member.edge, states[key].edge_member(i), slot))
            if member.wall_clock is not None and stream is not None:
                walls.append(Clocked(stream, states[key].clock_member(i)))
    return whens, walls


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run starts: a checkpointed state and what each stream already holds."""

    step: int
    time: float
    fields: dict[str, np.ndarray] | None  # None: the initial state
    last_capture: dict[str, int]
    #: The schedules' state saved with the checkpoint (None: start them afresh).
    schedules: dict[str, float] | None = None


class Run:
    """The state of one run as it advances."""

    def __init__(self, plan: RunPlan, backend: AbstractBackend, writer: CaptureWriter,
                 buffers: HostBuffers, resume: ResumePoint | None = None) -> None:
        self.plan = plan
        self.backend = backend
        self.writer = writer
        seed = plan.scenario.seed
        self.step_fn = step_for(plan.solver, seed)
        self.buffers = buffers
        self.diagnostics = diagnostics_for(plan.solver)
        self.sizes = plan.sizes
        self.checkpoints = plan.checkpoints
        #: The state of each schedule, by the scenario key it came from.
        self.schedule_states = {key: schedule.init_state()
                                for key, schedule in schedules(plan).items()}
        self.state_slots = tuple(save_schedules(self.schedule_states))
        self.step = 0
        self.time = 0.0
        rng = np.random.default_rng(seed)
        host = plan.solver.initial_state(plan.initial, rng)
        self.dims = {name: plan.dims[name] for name in plan.field_names}
        self.fields = {name: backend.place(host[name], dims) for name, dims in self.dims.items()}
        self.last_capture: dict[str, int] = {}
        self.plain = [s for s in plan.streams if s.stage is None]
        self.staged = [s for s in plan.streams if s.stage is not None]
        # Conditions and wall-clock captures happen between blocks, at a block's last step;
        # a stage stream's capture then retakes that step stage by stage. A condition of
        # stop_when ends the run instead of capturing.
        self.whens, self.walls = _watched(plan, self.schedule_states)
        self.stopped = False
        self._resume(resume)
        self.watch = (conditions_for(plan.solver, tuple(w.condition.key for w in self.whens))
                      if self.whens else None)

    def _resume(self, resume: ResumePoint | None) -> None:
        """Start from ``resume``: the schedules get back the state saved with its checkpoint,
        so they capture what an uninterrupted run would."""
        saved = None
        if resume is not None:
            self.step, self.time = resume.step, resume.time
            if resume.fields is not None:
                self.fields = {name: self.backend.place(value, self.dims[name])
                               for name, value in resume.fields.items()}
                saved = resume.schedules
                if saved is None and self.state_slots:
                    logger.warning("the checkpoint at step %d holds no schedule state: cooldowns "
                                   "and wall-clock schedules start afresh", resume.step)
            self.last_capture = dict(resume.last_capture)
        restore_schedules(self.schedule_states, saved)

    def level_value(self, stages: Callable[[str], Mapping[str, Any] | None]
                    ) -> Callable[[Condition], float]:
        """A condition's diagnostic on the host, of the run's state or (with a stage) of
        ``stages(stage)``: NaN, which holds no condition, where no step made that state."""
        def value(condition: Condition) -> float:
            state = self.fields if condition.stage is None else stages(condition.stage)
            if state is None:  # the state the run starts from: no stage made it
                return float("nan")
            found = self.backend.call(self.diagnostics[condition.diagnostic].fn, state)
            return float(self.backend.to_host({"v": found})["v"])

        return value
