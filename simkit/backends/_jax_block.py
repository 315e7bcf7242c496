"""A block on JAX: one jitted program runs every capture point of a block (a while loop over the
points, an inner loop over each gap's steps) and stores captures into device buffers.

Gaps, time steps, due masks and the number of points are data: one trace serves a whole run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from simkit.backends._block import (
    HELD,
    STEP,
    BlockPlan,
    BlockProgram,
    BlockResult,
    Slot,
    primer,
    slot_values,
)


def _all_finite(values: dict[str, Any]) -> Any:
    flags = [jnp.all(jnp.isfinite(v)) for v in values.values()
             if jnp.issubdtype(jnp.asarray(v).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def compile_block(program: BlockProgram, dtype: Any) -> Any:
    """The jitted block function of ``program``: ``(fields, plan arrays...) -> results``."""
    return jax.jit(block_function(program, dtype))


def compile_ensemble_block(program_for: Callable[[Any], BlockProgram], dtype: Any) -> Any:
    """The jitted block function of an ensemble: the block of ``program_for(row)`` mapped
    (``jax.vmap``) over a leading member axis of the fields and of the parameter rows, with one
    plan for every member: ``(fields, values, plan arrays...) -> results`` with a leading member
    axis on each. The plan's loop bounds stay unbatched, so no member runs steps of another."""
    def run(fields, values, *plan):
        def one(f, row, *plan):
            return block_function(program_for(row), dtype)(f, *plan)

        return jax.vmap(one, in_axes=(0, 0) + (None,) * len(plan))(fields, values, *plan)

    return jax.jit(run)


def block_function(program: BlockProgram, dtype: Any) -> Callable[..., tuple]:
    """The traceable (not yet jitted) block of ``program``."""
    block = _Block(program, dtype)

    def run(fields, counts, dts, last_dts, steps, times, offsets, due, used, enabled, held):
        return block.run(fields, _Plan(counts, dts, last_dts, steps, times, offsets, due, used,
                                       enabled, held))

    return run


class _Plan(NamedTuple):
    """A block's plan arrays as the traced program receives them (see ``BlockPlan``)."""

    counts: Any
    dts: Any
    last_dts: Any
    steps: Any
    times: Any
    offsets: Any
    due: Any
    used: Any
    enabled: Any
    held: Any


class _Gap(NamedTuple):
    """The steps before one capture point: ``n`` steps from step ``s0``, of ``dt`` but the last
    (``last``); ``plain`` of them are the one step function, the rest the staged step."""

    n: Any
    dt64: Any
    dt: Any
    last: Any
    s0: Any
    t0: Any
    o: Any
    plain: Any

    def time_at(self, i: Any) -> Any:
        # As the host computes it: float64 whatever the state's dtype, counted from the start of
        # the gap.
        return self.t0 + jnp.asarray(self.o + i, jnp.float64) * self.dt64

    def dt_of(self, i: Any) -> Any:
        return jnp.where(i == self.n - 1, self.last, self.dt)


class _Taken(NamedTuple):
    """Where a point's gap left the block: the state, what its stages saw, and the memory of the
    edge conditions; ``completed``: whether the gap ran to its capture point."""

    f: Any
    seen: Any
    stopped: Any
    prev: Any
    fired: Any
    taken: Any
    completed: Any


class _Block:
    """The pieces of one block program; ``run`` is traced once per run."""

    def __init__(self, program: BlockProgram, dtype: Any) -> None:
        self.program, self.dtype = program, dtype
        self.slots = program.slots
        self.watch, self.levels = program.watch, program.levels
        # Edge conditions on a stage: every watched step is the staged one, and their memory
        # comes with the plan (the state holds none of it).
        self.staged_watch = np.asarray(program.watch_staged, dtype=bool)
        # One step, traced once wherever the block takes it (XLA inlines the call).
        self.one_step = jax.jit(program.step)
        self.watch_step = program.staged if self.staged_watch.any() else self._unstaged

    def _unstaged(self, f: Any, dt: Any, step: Any, time: Any) -> tuple[Any, None]:
        return self.program.step(f, dt, step, time), None

    def last_step(self, f: Any, dt: Any, step: Any, time: Any) -> tuple[Any, Any]:
        if self.program.staged is None:
            return self.program.step(f, dt, step, time), None
        return self.program.staged(f, dt, step, time)

    def run(self, fields: Any, plan: _Plan) -> tuple:
        program, watch, slots = self.program, self.watch, self.slots
        buffers = []
        for slot in slots:
            b = {name: jnp.zeros((slot.capacity, *program.shapes[name][0]),
                                 program.shapes[name][1])
                 for name in slot.fields + slot.diagnostics + ((HELD,) if slot.held else ())}
            b[STEP] = jnp.zeros(slot.capacity, jnp.int64)
            buffers.append(b)
        no_flags = jnp.zeros(0, bool)
        prev0 = (jnp.where(self.staged_watch, plan.held, watch(fields, None))
                 if watch is not None else no_flags)
        false = jnp.asarray(False)

        def more(carry):
            return (carry[0] < plan.used) & ~carry[5]

        start = (jnp.asarray(0, jnp.int64), self.primed(fields, plan), buffers,
                 jnp.zeros(len(slots), jnp.int64), jnp.asarray(True), false, prev0,
                 jnp.zeros_like(prev0), jnp.asarray(0, jnp.int64))
        k, f, bufs, idx, ok, _, prev, fired, taken = jax.lax.while_loop(
            more, lambda carry: self.point(carry, plan, false), start)
        f = {name: f[name] for name in fields}  # the carried intermediates dropped
        ok = ok & _all_finite(f)
        return f, bufs, idx, k, taken, fired, ok, prev

    def primed(self, fields: Any, plan: _Plan) -> dict[str, Any]:
        """The fields, and what the step carries from step to step (``Carry``) computed from
        them with the scalars of the block's first step (unused when the block takes none)."""
        prime = primer(self.program)
        if prime is None:
            return dict(fields)
        dt = jnp.where(plan.counts[0] == 1, plan.last_dts[0], plan.dts[0]).astype(self.dtype)
        time = plan.times[0] + jnp.asarray(plan.offsets[0], jnp.float64) * plan.dts[0]
        return dict(prime(dict(fields), dt, plan.steps[0], time))

    def point(self, carry: tuple, plan: _Plan, false: Any) -> tuple:
        """One capture point: its gap of steps, then the captures due at it."""
        k, f, bufs, idx, ok, stopped, prev, fired, taken = carry
        n, dt64, last64 = plan.counts[k], plan.dts[k], plan.last_dts[k]
        dt, last = dt64.astype(self.dtype), last64.astype(self.dtype)
        s0, t0, o = plan.steps[k], plan.times[k], plan.offsets[k]
        # With stage captures the point's last step is the staged step; otherwise every step of
        # the gap is the one step function (traced once), the last one with its own dt.
        plain = n - 1 if self.program.staged is not None else n
        gap = _Gap(n, dt64, dt, last, s0, t0, o, plain)
        if self.watch is None and self.program.staged is None:
            done = self.fused_gap(gap, f, stopped, prev, fired, taken)
        elif self.watch is None:
            done = self.staged_gap(gap, f, stopped, prev, fired, taken)
        else:
            done = self.watched_gap(gap, f, prev, fired, taken, plan.enabled, false)
        if self.program.staged is not None:
            done = self.staged_last_step(gap, done, plan.enabled)
        level_flags = self.levels(done.f, done.seen) if self.levels is not None else None
        new_bufs, new_idx = [], []
        for s, slot in enumerate(self.slots):
            do = plan.due[k, s] & done.completed
            if slot.level is not None:
                do = do & level_flags[slot.level]
            b, good = self.store(slot, gap, done, do, bufs[s], idx, s)
            ok = ok & good
            new_bufs.append(b)
            new_idx.append(idx[s] + do.astype(jnp.int64))
        idx = jnp.stack(new_idx) if new_idx else idx
        return k + 1, done.f, new_bufs, idx, ok, done.stopped, done.prev, done.fired, done.taken

    def fused_gap(self, gap: _Gap, f: Any, stopped: Any, prev: Any, fired: Any,
                  taken: Any) -> _Taken:
        """No conditions, no stages: the point's last step is taken apart from the loop, in the
        computation that stores the captures, so that XLA fuses the captured reductions with the
        step's own pass over the state instead of reading the state again. A point of no steps
        (an ensemble's first) keeps its state."""
        n, dt, s0 = gap.n, gap.dt, gap.s0
        f = jax.lax.fori_loop(jnp.zeros((), jnp.int64), n - 1, lambda i, g: self.one_step(
            g, dt, s0 + i, gap.time_at(i)), f)
        stepped = self.one_step(f, gap.last, s0 + n - 1, gap.time_at(n - 1))
        f = jax.tree_util.tree_map(lambda new, old: jnp.where(n > 0, new, old), stepped, f)
        return _Taken(f, None, stopped, prev, fired, taken + n, jnp.asarray(True))

    def staged_gap(self, gap: _Gap, f: Any, stopped: Any, prev: Any, fired: Any,
                   taken: Any) -> _Taken:
        """No conditions: the gap's steps but the staged last one."""
        f = jax.lax.fori_loop(jnp.zeros((), jnp.int64), gap.plain, lambda i, g: self.program.step(
            g, gap.dt_of(i), gap.s0 + i, gap.time_at(i)), f)
        return _Taken(f, None, stopped, prev, fired, taken + gap.plain, jnp.asarray(True))

    def watched_gap(self, gap: _Gap, f: Any, prev: Any, fired: Any, taken: Any, enabled: Any,
                    false: Any) -> _Taken:
        """Edge conditions: the gap stops at the step where one turns true."""
        def cond(c):
            i, _, stop, _, _ = c
            return (i < gap.plain) & ~stop

        def body(c):
            i, g, _, p, _ = c
            g, stage_states = self.watch_step(g, gap.dt_of(i), gap.s0 + i, gap.time_at(i))
            now = self.watch(g, stage_states)
            turned = now & ~p & enabled
            return i + 1, g, jnp.any(turned), now, turned

        i, f, stop, prev, turned = jax.lax.while_loop(
            cond, body, (jnp.zeros((), jnp.int64), f, false, prev, fired))
        fired = jnp.where(stop, turned, fired)
        # A condition may fire at the gap's very last step.
        return _Taken(f, None, stop, prev, fired, taken + i, i == gap.plain)

    def staged_last_step(self, gap: _Gap, done: _Taken, enabled: Any) -> _Taken:
        """The point's last step, the staged one (what stage captures see)."""
        args = (gap.last, gap.s0 + gap.n - 1, gap.time_at(gap.n - 1))
        if self.watch is None:
            f, seen = self.last_step(done.f, *args)
            return done._replace(f=f, seen=seen, taken=done.taken + 1)
        # The last step only if no condition stopped the gap before it.
        completed, stopped = done.completed, done.stopped
        shapes = jax.eval_shape(self.last_step, done.f, *args)
        skipped = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        f, seen = jax.lax.cond(completed & ~stopped, lambda g: self.last_step(g, *args),
                               lambda g: (g, skipped[1]), done.f)
        now = self.watch(f, seen)
        turned = now & ~done.prev & enabled & completed & ~stopped
        fired = jnp.where(jnp.any(turned), turned, done.fired)
        taken = done.taken + (completed & ~stopped).astype(jnp.int64)
        completed = completed & ~stopped
        stopped = stopped | jnp.any(turned)
        prev = jnp.where(completed, now, done.prev)
        return _Taken(f, seen, stopped, prev, fired, taken, completed)

    def store(self, slot: Slot, gap: _Gap, done: _Taken, do: Any, buffers: dict[str, Any],
              idx: Any, s: int) -> tuple[dict[str, Any], Any]:
        """Store what ``slot`` (the ``s``-th, its index at ``idx[s]``) keeps at this point where
        ``do``: the new buffers, and whether the stored values are finite."""
        program, f, seen = self.program, done.f, done.seen
        if not slot.inline:  # computed and stored only where due
            def write(operand):
                b, i = operand
                values = slot_values(program, slot, f, seen)
                good = _all_finite(values)
                values[STEP] = gap.s0 + gap.n
                if slot.held:
                    values[HELD] = done.prev
                out = {name: jax.lax.dynamic_update_index_in_dim(
                    b[name], jnp.asarray(values[name], b[name].dtype), i, 0) for name in b}
                return out, good

            return jax.lax.cond(do, write, lambda operand: (operand[0], jnp.asarray(True)),
                                (buffers, idx[s]))
        # Due at (nearly) every point: computed in line with the step (a branch would keep them
        # apart from it), stored where due; elsewhere the row at the index (clamped when the
        # buffer is full) keeps its value.
        values = slot_values(program, slot, f, seen)
        good = _all_finite(values) | ~do
        values[STEP] = gap.s0 + gap.n
        row = jnp.minimum(idx[s], slot.capacity - 1)
        b = {name: jax.lax.dynamic_update_index_in_dim(old, jnp.where(
            do, jnp.asarray(values[name], old.dtype),
            jax.lax.dynamic_index_in_dim(old, row, 0, keepdims=False)), row, 0)
             for name, old in buffers.items()}
        return b, good


def run_block(compiled: Any, fields: dict[str, Any], plan: BlockPlan) -> BlockResult:
    """Dispatch one block (asynchronously: nothing here waits for the device)."""
    f, bufs, idx, k, taken, fired, ok, held = compiled(
        dict(fields), plan.counts, plan.dts, plan.last_dts, plan.steps, plan.times, plan.offsets,
        plan.due, np.int64(plan.used), plan.enabled, plan.held)
    return BlockResult(f, bufs, idx, k, taken, fired, ok, held)


def run_ensemble_block(compiled: Any, fields: dict[str, Any], values: Any, plan: BlockPlan
                       ) -> BlockResult:
    """Dispatch one block of every member (asynchronously); each entry of the result has a
    leading member axis (``counts`` (M, S), ``finite`` (M,))."""
    f, bufs, idx, k, taken, fired, ok, held = compiled(
        dict(fields), values, plan.counts, plan.dts, plan.last_dts, plan.steps, plan.times,
        plan.offsets, plan.due, np.int64(plan.used), plan.enabled, plan.held)
    return BlockResult(f, bufs, idx, k, taken, fired, ok, held)
