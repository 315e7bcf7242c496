"""One run as it advances: its plan, backend, writer, state and schedules; where a resume
starts; which streams are checkpoints; the schedules' own state saved and restored."""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from simkit.backends import AbstractBackend
from simkit.driver._steps import conditions_for, diagnostics_for, step_for
from simkit.io import BackgroundWriter
from simkit.scenario import RunPlan, StreamPlan
from simkit.schedule import AbstractSchedule, WallTime, When, members

if TYPE_CHECKING:  # the buffers' module captures for a run: it imports this one
    from simkit.driver._captures import HostBuffers

logger = logging.getLogger(__name__)


def is_checkpoint(stream: StreamPlan, field_names: list[str]) -> bool:
    """Whether the captures of ``stream`` are checkpoints: full states at the end of a step (a
    stream that captures after a stage holds mid-step states, which a resume must not use)."""
    return stream.stage is None and set(field_names) <= set(stream.fields)


def _schedules(plan: RunPlan) -> dict[str, AbstractSchedule]:
    """Every schedule of the run, by the scenario key it came from."""
    found: dict[str, AbstractSchedule] = {f"outputs.{s.name}": s.schedule for s in plan.streams}
    if plan.stop_when is not None:
        found["stop_when"] = plan.stop_when
    return found


def held_slot(plan: RunPlan, when: When) -> str:
    """The name under which ``save_schedules`` keeps the memory of an edge condition on a stage
    (whether it held at the last step)."""
    for key, schedule in _schedules(plan).items():
        if schedule is when:
            return f"{key}.held"
        found = [i for i, m in enumerate(members(schedule)) if m is when]
        if found and schedule is not when:
            return f"{key}.{found[0]}.held"
    raise ValueError(f"expected a condition of this run's schedules, given {when!r}")


def schedule_state(run: Run) -> np.ndarray | None:
    """The schedules' state now as checkpoints keep it, one number per slot of
    ``run.state_slots`` (None when the run's schedules keep none)."""
    if not run.state_slots:
        return None
    saved = save_schedules(run.plan)
    return np.array([saved[slot] for slot in run.state_slots], dtype=np.float64)


def save_schedules(plan: RunPlan) -> dict[str, float]:
    """The state of every schedule of the run (cooldowns, deadlines), flat, by slot name."""
    return {f"{key}.{name}": value for key, schedule in _schedules(plan).items()
            for name, value in schedule.save().items()}


def restore_schedules(plan: RunPlan, state: Mapping[str, float] | None) -> None:
    """Give every schedule of the run the state ``save_schedules`` saved (None: a fresh start).

    Raises:
        ValueError: ``state`` names slots other than the run's.
    """
    schedules = _schedules(plan)
    for schedule in schedules.values():
        schedule.reset()
    if state is None:
        return
    unknown = sorted(set(state) - set(save_schedules(plan)))
    if unknown:
        raise ValueError(f"schedule state: expected slots of this run's schedules "
                         f"({', '.join(save_schedules(plan))}), given {', '.join(unknown)}")
    for key, schedule in schedules.items():
        prefix = f"{key}."
        schedule.restore({name.removeprefix(prefix): value for name, value in state.items()
                          if name.startswith(prefix)})


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

    def __init__(self, plan: RunPlan, backend: AbstractBackend, writer: BackgroundWriter,
                 buffers: HostBuffers, resume: ResumePoint | None = None) -> None:
        self.plan = plan
        self.backend = backend
        self.writer = writer
        seed = plan.scenario.seed
        self.step_fn = step_for(plan.solver, seed)
        self.buffers = buffers
        self.diagnostics = diagnostics_for(plan.solver)
        self.sizes = {c.name: len(c.values) for c in plan.solver.coordinates()}
        field_names = [f.name for f in plan.solver.fields()]
        self.checkpoints = {s.name for s in plan.streams if is_checkpoint(s, field_names)}
        self.state_slots = tuple(save_schedules(plan))
        self.step = 0
        self.time = 0.0
        rng = np.random.default_rng(seed)
        host = plan.solver.initial_state(plan.initial, rng)
        self.dims = {f.name: f.dims for f in plan.solver.fields()}
        self.fields = {name: backend.place(host[name], dims) for name, dims in self.dims.items()}
        self.last_capture: dict[str, int] = {}
        self.plain = [s for s in plan.streams if s.stage is None]
        self.staged = [s for s in plan.streams if s.stage is not None]
        # Conditions and wall-clock captures happen between blocks, at a block's last step;
        # a stage stream's capture then retakes that step stage by stage.
        self.whens = [(s, m) for s in plan.streams for m in members(s.schedule)
                      if isinstance(m, When)]
        if plan.stop_when is not None:
            self.whens.append((None, plan.stop_when))  # ends the run instead of capturing
        self.stopped = False
        self.walls = [(s, m) for s in plan.streams for m in members(s.schedule)
                      if isinstance(m, WallTime)]
        # The schedules keep their own state (cooldowns, deadlines); a resume gives them back
        # the state saved with its checkpoint, so they capture what an uninterrupted run would.
        saved = None
        if resume is not None:
            self.step, self.time = resume.step, resume.time
            if resume.fields is not None:
                self.fields = {name: backend.place(value, self.dims[name])
                               for name, value in resume.fields.items()}
                saved = resume.schedules
                if saved is None and self.state_slots:
                    logger.warning("the checkpoint at step %d holds no schedule state: cooldowns "
                                   "and wall-clock schedules start afresh", resume.step)
            self.last_capture = dict(resume.last_capture)
        restore_schedules(plan, saved)
        self.watch = self._make_watch() if self.whens else None
        # The step rate that sizes blocks before a wall-clock capture counts this process's
        # steps only (a resumed run starts at its checkpoint's step).
        self.wall_started, self.wall_start_step = _time.perf_counter(), self.step
        self.checked_at = self.step

    def _make_watch(self):
        return conditions_for(self.plan.solver, tuple((m.diagnostic, m.above, m.below, m.stage)
                                                      for _, m in self.whens))
