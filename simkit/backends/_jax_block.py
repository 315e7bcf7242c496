"""A block on JAX: one jitted program runs every capture point of a block (a while loop over the
points, an inner loop over each gap's steps) and stores captures into device buffers.

Gaps, time steps, due masks and the number of points are data: one trace serves a whole run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from simkit.backends._block import HELD, STEP, BlockPlan, BlockProgram, BlockResult, slot_values


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
    slots = program.slots
    watch, levels = program.watch, program.levels
    # Edge conditions on a stage: every watched step is the staged one, and their memory comes
    # with the plan (the state holds none of it).
    staged_watch = np.asarray(program.watch_staged, dtype=bool)
    # One step, traced once wherever the block takes it (XLA inlines the call).
    one_step = jax.jit(program.step)
    watch_step = (program.staged if staged_watch.any()
                  else lambda f, dt, step, time: (program.step(f, dt, step, time), None))

    def last_step(f, dt, step, time):
        if program.staged is None:
            return program.step(f, dt, step, time), None
        return program.staged(f, dt, step, time)

    def run(fields, counts, dts, last_dts, steps, times, offsets, due, used, enabled, held):
        buffers = []
        for slot in slots:
            b = {name: jnp.zeros((slot.capacity, *program.shapes[name][0]),
                                 program.shapes[name][1])
                 for name in slot.fields + slot.diagnostics + ((HELD,) if slot.held else ())}
            b[STEP] = jnp.zeros(slot.capacity, jnp.int64)
            buffers.append(b)
        no_flags = jnp.zeros(0, bool)
        prev0 = (jnp.where(staged_watch, held, watch(fields, None)) if watch is not None
                 else no_flags)
        false = jnp.asarray(False)

        def point(carry):
            k, f, bufs, idx, ok, stopped, prev, fired, taken = carry
            n, dt64, last64 = counts[k], dts[k], last_dts[k]
            dt, last = dt64.astype(dtype), last64.astype(dtype)
            s0, t0, o = steps[k], times[k], offsets[k]

            def time_at(i):
                # As the host computes it: float64 whatever the state's dtype, counted from the
                # start of the gap.
                return t0 + jnp.asarray(o + i, jnp.float64) * dt64

            # With stage captures the point's last step is the staged step; otherwise every step
            # of the gap is the one step function (traced once), the last one with its own dt.
            plain = n - 1 if program.staged is not None else n

            def dt_of(i):
                return jnp.where(i == n - 1, last, dt)

            seen = None
            if watch is None and program.staged is None:
                # The point's last step is taken apart from the loop, in the computation that
                # stores the captures: XLA then fuses the captured reductions with the step's
                # own pass over the state instead of reading the state again. A point of no
                # steps (an ensemble's first) keeps its state.
                f = jax.lax.fori_loop(jnp.zeros((), jnp.int64), n - 1, lambda i, g: one_step(
                    g, dt, s0 + i, time_at(i)), f)
                stepped = one_step(f, last, s0 + n - 1, time_at(n - 1))
                f = jax.tree_util.tree_map(lambda new, old: jnp.where(n > 0, new, old), stepped,
                                           f)
                taken = taken + n
                completed = jnp.asarray(True)
            elif watch is None:
                f = jax.lax.fori_loop(jnp.zeros((), jnp.int64), plain, lambda i, g: program.step(
                    g, dt_of(i), s0 + i, time_at(i)), f)
                taken = taken + plain
                completed = jnp.asarray(True)
            else:
                def cond(c):
                    i, _, stop, _, _ = c
                    return (i < plain) & ~stop

                def body(c):
                    i, g, _, p, _ = c
                    g, stage_states = watch_step(g, dt_of(i), s0 + i, time_at(i))
                    now = watch(g, stage_states)
                    turned = now & ~p & enabled
                    return i + 1, g, jnp.any(turned), now, turned

                i, f, stop, prev, turned = jax.lax.while_loop(
                    cond, body, (jnp.zeros((), jnp.int64), f, false, prev, fired))
                fired = jnp.where(stop, turned, fired)
                stopped = stop
                taken = taken + i
                completed = i == plain  # a condition may fire at the gap's very last step
            if program.staged is not None:
                args = (last, s0 + n - 1, time_at(n - 1))
                if watch is None:
                    f, seen = last_step(f, *args)
                else:  # the last step only if no condition stopped the gap before it
                    shapes = jax.eval_shape(last_step, f, *args)
                    skipped = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                     shapes)
                    f, seen = jax.lax.cond(completed & ~stopped,
                                           lambda g: last_step(g, *args),
                                           lambda g: (g, skipped[1]), f)
                    now = watch(f, seen)
                    turned = now & ~prev & enabled & completed & ~stopped
                    fired = jnp.where(jnp.any(turned), turned, fired)
                    taken = taken + (completed & ~stopped).astype(jnp.int64)
                    completed = completed & ~stopped
                    stopped = stopped | jnp.any(turned)
                    prev = jnp.where(completed, now, prev)
                if watch is None:
                    taken = taken + 1
            true_ = completed
            level_flags = levels(f, seen) if levels is not None else None
            new_bufs, new_idx = [], []
            for s, slot in enumerate(slots):
                do = due[k, s] & true_
                if slot.level is not None:
                    do = do & level_flags[slot.level]

                def write(operand, slot=slot):
                    b, i = operand
                    values = slot_values(program, slot, f, seen)
                    good = _all_finite(values)
                    values[STEP] = s0 + n
                    if slot.held:
                        values[HELD] = prev
                    out = {name: jax.lax.dynamic_update_index_in_dim(
                        b[name], jnp.asarray(values[name], b[name].dtype), i, 0) for name in b}
                    return out, good

                if not slot.inline:  # computed and stored only where due
                    b, good = jax.lax.cond(do, write,
                                           lambda operand: (operand[0], jnp.asarray(True)),
                                           (bufs[s], idx[s]))
                else:
                    # Due at (nearly) every point: computed in line with the step (a branch
                    # would keep them apart from it), stored where due; elsewhere the row at
                    # the index (clamped when the buffer is full) keeps its value.
                    values = slot_values(program, slot, f, seen)
                    good = _all_finite(values) | ~do
                    values[STEP] = s0 + n
                    row = jnp.minimum(idx[s], slot.capacity - 1)
                    b = {name: jax.lax.dynamic_update_index_in_dim(old, jnp.where(
                        do, jnp.asarray(values[name], old.dtype),
                        jax.lax.dynamic_index_in_dim(old, row, 0, keepdims=False)), row, 0)
                         for name, old in bufs[s].items()}
                ok = ok & good
                new_bufs.append(b)
                new_idx.append(idx[s] + do.astype(jnp.int64))
            idx = jnp.stack(new_idx) if new_idx else idx
            return k + 1, f, new_bufs, idx, ok, stopped, prev, fired, taken

        def more(carry):
            return (carry[0] < used) & ~carry[5]

        start = (jnp.asarray(0, jnp.int64), dict(fields), buffers,
                 jnp.zeros(len(slots), jnp.int64), jnp.asarray(True), false, prev0,
                 jnp.zeros_like(prev0), jnp.asarray(0, jnp.int64))
        k, f, bufs, idx, ok, _, prev, fired, taken = jax.lax.while_loop(more, point, start)
        ok = ok & _all_finite(f)
        return f, bufs, idx, k, taken, fired, ok, prev

    return run


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
