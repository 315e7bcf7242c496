"""Committing captures: each stream's captures of a block handed to the writer at once (a block
program's device buffers, or captures a recording took one step at a time on the host),
checkpoints with the schedules' state at their step; and where a block went non-finite, the
good captures before it committed and the step, stage and field named."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simkit.backends._block import HELD, STEP, BlockProgram
from simkit.driver._replay import Piece, check_finite, replay
from simkit.driver._run import Run, schedule_state
from simkit.errors import NonFiniteError
from simkit.io import CaptureWriter, schema

#: What a run's checkpoints keep of a firing in a block: the schedules' state before it, after
#: it, and the step it fired at (-1: none fired).
States = tuple[np.ndarray, np.ndarray, int]
#: A stream's captures of a block: ``(stream, steps, times, arrays)``, arrays along the steps.
Block = tuple[str, list[int], list[float], Mapping[str, np.ndarray]]
#: One capture taken on the host: ``(stream, step, time, arrays)``.
HostCapture = tuple[str, int, float, Mapping[str, np.ndarray]]


def hand_over(writer: CaptureWriter, blocks: list[Block], upto: int | None = None) -> None:
    """Hand every stream's block to ``writer`` as one write with one sync, whatever the number
    of streams; with ``upto``, mark every capture due up to that step as queued (the file says
    so once they are synced)."""
    if blocks:
        writer.capture_blocks(blocks)
    if upto is not None:
        writer.committed(upto)


def commit_captures(writer: CaptureWriter, captures: Sequence[HostCapture],
                    kept: Mapping[str, tuple[str, ...]], upto: int) -> None:
    """Commit captures taken one step at a time on the host (a recording's), in order: one
    block per stream holding the variables ``kept[stream]``, every capture up to ``upto``."""
    taken: dict[str, list[HostCapture]] = {}
    for capture in captures:
        taken.setdefault(capture[0], []).append(capture)
    hand_over(writer, [(name, [c[1] for c in found], [c[2] for c in found],
                        {n: np.stack([c[3][n] for c in found]) for n in kept[name]})
                       for name, found in taken.items()], upto)


def commit(run: Run, program: BlockProgram, host: dict[str, Any], times: dict[int, float],
           upto: int | None = None, states: States | None = None) -> None:
    """Hand every stream's captures of the block to the run's writer (those up to ``upto``);
    checkpoints keep the schedules' state: ``states`` = (before, after, step) gives the state
    after a firing to the checkpoint at its step, else the state now serves all."""
    blocks: list[Block] = []
    for slot, buffers, count in zip(program.slots, host["buffers"], host["counts"], strict=True):
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
                assert now is not None  # the run has state slots
                states = (now, now, -1)
            arrays[schema.SCHEDULE_STATE] = _states(run, states, steps,
                                                    buffers[HELD] if slot.held else None)
        step_list = [int(s) for s in steps]
        blocks.append((slot.stream, step_list, [times[s] for s in step_list], arrays))
        run.last_capture[slot.stream] = step_list[-1]
    hand_over(run.writer, blocks)


def _states(run: Run, states: States, steps: np.ndarray, held: np.ndarray | None
            ) -> np.ndarray:
    """The schedules' state of each capture of a checkpoint stream at ``steps`` (``held``: as
    each condition on a stage stood at each captured step)."""
    before, after, fired_at = states
    count = len(steps)
    state: np.ndarray = np.broadcast_to(before, (count, len(before))).copy()
    state[steps == fired_at] = after
    if held is not None:
        for j, when in enumerate(run.whens):
            if when.condition.stage is not None:
                state[:, run.state_slots.index(when.held_slot)] = held[:count, j]
    return state


def non_finite(run: Run, program: BlockProgram, start: Any, start_step: int,
               pieces: list[Piece], host: dict[str, Any], times: dict[int, float]) -> None:
    """Name the step, stage and field (or the captured value) where the block first went
    non-finite, commit the good captures before it, and raise NonFiniteError.

    A finite state may still give a non-finite captured value (a reduction that overflows);
    whichever comes first ends the run, with the state it came from as the final state."""
    bad_step, bad_name = _first_bad_capture(program, host)
    try:
        check_finite(run, start, start_step, pieces)
    except NonFiniteError:
        # run.step: the last good state, kept as the final state.
        if bad_step is None or bad_step > run.step:
            commit(run, program, host, times, upto=run.step)
            raise
    if bad_step is None:
        return
    commit(run, program, host, times, upto=bad_step - 1)
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
