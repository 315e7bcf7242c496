"""Blocks: many capture points advanced by one call, captures stored on the device.

The host plans a block as K capture points (steps to take before each, their time steps, which
streams are due at each) and the backend runs the whole block in one call, storing what every due
stream keeps into per-stream device buffers of fixed capacity. Nothing leaves the device until the
block ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simkit._types import Array, State, StepFn, WatchFn

#: Per-slot key of the step index of each capture in a block's buffers (the host knows their
#: times: it planned them).
STEP = "step"
#: In a checkpoint slot's buffers (with edge conditions on stages): whether each held at the
#: captured step.
HELD = "held"


@dataclass(frozen=True)
class Slot:
    """What one stream keeps inside a block; static for a whole run.

    Args:
        stream: the stream's name.
        stage: capture right after this stage of the point's last step (None: end of step).
        fields: fields (or the stage's probes) kept.
        diagnostics: diagnostics kept, computed on the device from the captured state.
        capacity: the most captures of this stream in one block.
        level: index into the program's level conditions gating each capture, or None.
        held: also keep, per capture, whether each edge condition held (``HELD``).
        inline: small values due at every step (diagnostics every step): a compiled block
            computes them at every point, without a branch, and stores them where due.
    """

    stream: str
    stage: str | None
    fields: tuple[str, ...]
    diagnostics: tuple[str, ...]
    capacity: int
    level: int | None = None
    held: bool = False
    inline: bool = False


@dataclass(frozen=True, eq=False)
class BlockProgram:
    """The static part of a run's blocks, compiled once per run whatever the schedules.

    Args:
        step: one full step, ``(fields, dt, step, time) -> fields``.
        staged: one full step that also returns the state right after each stage named by a
            slot, ``(fields, dt, step, time) -> (fields, {stage: state})``; None without stage
            slots.
        diagnostics: diagnostic functions by name, ``state -> 0-d or small array``.
        slots: what each stream keeps.
        points: the most capture points in one block (the length of a plan's arrays).
        watch: edge-triggered conditions (``(fields, seen) -> bool (W,)``) that end a block
            where one turns true; None when there are none.
        levels: level conditions (``(fields, seen) -> bool (L,)``, ``seen`` as ``staged`` returns
            it, or None) gating slots; None when there are none.
        shapes: host shape and dtype of everything a slot may keep, by name (buffers are made
            from these).
        watch_staged: per edge condition, whether it is taken of a stage's state: then every
            step of a watched gap is ``staged`` and its memory comes in with the plan.
    """

    step: StepFn
    staged: Callable | None
    diagnostics: Mapping[str, Callable[[State], Array]]
    slots: tuple[Slot, ...]
    points: int
    watch: WatchFn | None
    levels: Callable[..., Array] | None
    shapes: Mapping[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    watch_staged: tuple[bool, ...] = ()


@dataclass
class BlockPlan:
    """The data of one block (host arrays of length ``program.points``; entries past ``used``
    are padding).

    Point ``k`` takes ``counts[k]`` steps: ``counts[k] - 1`` of length ``dts[k]`` then one of
    ``last_dts[k]``, from step index ``steps[k]``; then each slot ``s`` with ``due[k, s]``
    captures. Its ``i``-th step starts at simulated time ``times[k] + (offsets[k] + i) * dts[k]``:
    ``times[k]`` is where the point's gap began and ``offsets[k]`` the steps of the gap already
    taken, so a gap cut by a block boundary gives the same times as a gap run whole.
    """

    counts: np.ndarray
    dts: np.ndarray
    last_dts: np.ndarray
    steps: np.ndarray
    times: np.ndarray
    offsets: np.ndarray
    due: np.ndarray
    used: int
    enabled: np.ndarray
    #: Whether each edge condition on a stage held at the step the block starts from.
    held: np.ndarray

    @classmethod
    def empty(cls, points: int, slots: int, watched: int) -> BlockPlan:
        return cls(np.zeros(points, np.int64), np.zeros(points, np.float64),
                   np.zeros(points, np.float64), np.zeros(points, np.int64),
                   np.zeros(points, np.float64), np.zeros(points, np.int64),
                   np.zeros((points, slots), bool), 0,
                   np.ones(watched, bool), np.zeros(watched, bool))


@dataclass
class BlockResult:
    """What a block left on the device.

    Args:
        fields: the state after the last step taken.
        buffers: per slot, name -> (capacity, ...) device arrays, with ``STEP``.
        counts: captures stored per slot (device or host int array (S,)).
        points: points completed.
        steps: steps taken.
        fired: edge conditions that turned true at the last step (bool (W,)), or None.
        finite: whether the final fields and every stored value are finite (0-d bool).
        held: whether each edge condition held at the last step (bool (W,)), or None.
    """

    fields: dict[str, Array]
    buffers: list[dict[str, Array]]
    counts: Any
    points: Any
    steps: Any
    fired: Any
    finite: Any
    held: Any = None


#: The attribute of a step function (``simkit.solver.make_step``) that adds the intermediates a
#: step passes to the next (``simkit.solver.Carry``) to a state of fields alone: a block adds them
#: once at its start, its steps pass them on, and it returns the fields alone.
PRIME = "prime"


def primer(program: BlockProgram) -> Callable[..., Any] | None:
    """What adds the carried intermediates to the block's first state, or None: the step carries
    nothing, or is wrapped (compiled apart, sharded) and then takes each step whole."""
    return getattr(program.step, PRIME, None)


def slot_values(program: BlockProgram, slot: Slot, fields: State,
                seen: Mapping[str, State] | None) -> dict[str, Array]:
    """What ``slot`` keeps from the state at the end of a point (or after its stage)."""
    state = fields if slot.stage is None else seen[slot.stage]
    values = {name: state[name] for name in slot.fields}
    values.update({name: program.diagnostics[name](state) for name in slot.diagnostics})
    return values


class EagerBlockOps:
    """What the eager block loop needs from an array library: NumPy's forms (host arrays).

    Args:
        scalars: the backend's ``(dt, step, time) -> 0-d arrays`` of the step contract.
    """

    def __init__(self, scalars: Callable[[float, int, float], tuple]) -> None:
        self.scalars = scalars

    def buffer(self, shape: tuple[int, ...], dtype: str) -> Any:
        return np.empty(shape, dtype=dtype)

    def index(self) -> Any:
        return 0

    def store(self, buffer: Any, index: Any, value: Any) -> None:
        buffer[index] = value

    def truth(self, value: Any) -> Any:
        return bool(value)

    def all_finite(self, values: Mapping[str, Any]) -> Any:
        return all(bool(np.all(np.isfinite(v))) for v in values.values())

    def both(self, a: Any, b: Any) -> Any:
        return a and b

    def flags(self, value: Any) -> np.ndarray:
        return np.asarray(value, dtype=bool)

    def where(self, stopped: Any, old: Any, new: Any) -> Any:
        return old if stopped else new


def run_block_eager(program: BlockProgram, fields: Mapping[str, Array], plan: BlockPlan,
                    ops: EagerBlockOps) -> BlockResult:
    """A block as a plain loop (NumPy, eager PyTorch): no allocation per step beyond what the
    stages make, captures copied into buffers made once per block, no host sync per step on a
    device backend (``ops`` decides how indices and conditions are kept)."""
    buffers = [_slot_buffers(program, slot, ops) for slot in program.slots]
    indices = [ops.index() for _ in program.slots]
    finite = True
    out = dict(fields)
    steps_taken, fired = 0, None
    # Conditions on a stage keep watching in a cooldown (their memory goes on); the others are
    # taken of the state, so a block without enabled ones need not watch.
    staged_watch = np.asarray(program.watch_staged, dtype=bool)
    watching = program.watch is not None and bool(plan.enabled.any() or staged_watch.any())
    prev = None
    if watching:
        prev = np.where(staged_watch, plan.held, ops.flags(program.watch(out, None)))
    prime = primer(program)
    k = 0
    while k < plan.used:
        n, dt, last = int(plan.counts[k]), float(plan.dts[k]), float(plan.last_dts[k])
        step0, time0, offset = int(plan.steps[k]), float(plan.times[k]), int(plan.offsets[k])
        seen, stopped_early = None, False
        for i in range(n):
            scalars = ops.scalars(last if i == n - 1 else dt, step0 + i,
                                  time0 + (offset + i) * dt)
            if prime is not None:  # the block's first step: the carried intermediates added
                out, prime = prime(out, *scalars), None
            if program.staged is not None and (
                    (i == n - 1 and plan.due[k].any()) or (watching and staged_watch.any())):
                out, seen = program.staged(out, *scalars)
            else:
                out = program.step(out, *scalars)
            steps_taken += 1
            if watching:
                now = ops.flags(program.watch(out, seen))
                turned = now & ~prev & plan.enabled
                prev = now
                if turned.any():
                    fired, stopped_early = turned, i < n - 1
                    break
        if stopped_early:
            break  # stopped before the point: nothing is due
        levels = None
        for s, slot in enumerate(program.slots):
            if not plan.due[k, s]:
                continue
            if slot.level is not None:
                if levels is None:  # a due slot: the stages' states were kept (``seen``)
                    levels = ops.flags(program.levels(out, seen))
                if not levels[slot.level]:
                    continue
            values = slot_values(program, slot, out, seen)
            if slot.held:
                values[HELD] = np.array(prev, dtype=bool)
            for name, value in values.items():
                ops.store(buffers[s][name], indices[s], value)
            ops.store(buffers[s][STEP], indices[s], step0 + n)
            indices[s] += 1
        k += 1
        if fired is not None:
            break
    out = {name: out[name] for name in fields}  # the carried intermediates dropped
    # What was stored is checked once, buffer by buffer (not capture by capture).
    for s, slot in enumerate(program.slots):
        finite = ops.both(finite, ops.all_finite(
            {name: buffers[s][name][:indices[s]] for name in slot.fields + slot.diagnostics}))
    finite = ops.both(finite, ops.all_finite(out))
    return BlockResult(out, buffers, np.asarray(indices, dtype=np.int64), k, steps_taken,
                       fired if fired is not None or not watching else np.zeros_like(prev),
                       finite, prev if watching else plan.held)


def _slot_buffers(program: BlockProgram, slot: Slot, ops: EagerBlockOps) -> dict[str, Any]:
    buffers = {}
    for name in slot.fields + slot.diagnostics + ((HELD,) if slot.held else ()):
        shape, dtype = program.shapes[name]
        buffers[name] = ops.buffer((slot.capacity, *shape), dtype)
    buffers[STEP] = ops.buffer((slot.capacity,), "int64")
    return buffers
