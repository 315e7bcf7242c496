"""A run's steps under a binomial schedule: a forward sweep that stores the schedule's states,
and a hand-written backward pass that follows its rows (``jax.custom_vjp`` on JAX, a
``torch.autograd.Function`` on torch), taking each step backward by its own vjp.

The run is ``x_{k+1} = step(x_k) + probe_{k+1}`` for k < n; the sweep also returns the states at
``take_steps`` (the captures), whose cotangents join the adjoint on the way back, and the
adjoint at each probe step is the probe's gradient. Step 0 (its probe and capture) is the
caller's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from simkit.autodiff._revolve import WORKING, BinomialSchedule

#: ``params -> step``: the step of a solver rebuilt around those parameter values.
StepOf = Callable[[Mapping[str, Any]], Callable[..., dict[str, Any]]]


@dataclass(frozen=True)
class Plan:
    """What both executors follow: the schedule and where the captures and probes go."""

    schedule: BinomialSchedule
    dt: float
    keys: tuple[str, ...]            # the state's fields, in order
    names: tuple[str, ...]           # the fields taken at capture steps
    take_steps: tuple[int, ...]      # capture steps after step 0, increasing
    probe_slot: Mapping[int, int]    # probe step -> index in the probes' first axis

    def tables(self) -> dict[str, np.ndarray]:
        """Per step (0..n): index in the taken buffer and in the probes (-1: none); the sweep's
        stores (slot, ``slots_used`` for the working state, -1: none); the rows, with the
        working state as slot ``slots_used`` and no store as -1."""
        n, used = self.schedule.steps, self.schedule.slots_used
        take = np.full(n + 1, -1, dtype=np.int64)
        take[list(self.take_steps)] = np.arange(len(self.take_steps))
        probe = np.full(n + 1, -1, dtype=np.int64)
        for step, slot in self.probe_slot.items():
            if step >= 1:
                probe[step] = slot
        store = np.full(n + 1, -1, dtype=np.int64)
        for step, slot in self.schedule.sweep_stores.items():
            store[step] = slot
        if self.schedule.working_step >= 0:
            store[self.schedule.working_step] = used
        rows = self.schedule.rows
        return {"take": take, "probe": probe, "store": store,
                "src": np.asarray([used if r.src == WORKING else r.src for r in rows]),
                "k0": np.asarray([r.k0 for r in rows], dtype=np.int64),
                "k1": np.asarray([r.k1 for r in rows], dtype=np.int64),
                "dst": np.asarray([r.dst for r in rows], dtype=np.int64),
                "reverse": np.asarray([r.reverse for r in rows])}


# ----------------------------------------------------------------------------------- JAX


def run_jax(plan: Plan, step_of: StepOf, params: dict[str, Any], fields: dict[str, Any],
            probes: dict[str, Any], offset: Any = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """The final fields and the taken ones ``{name: (len(take_steps), ...)}``, differentiable
    in ``params``, ``fields`` and ``probes`` by reverse mode (forward mode is refused); the
    steps are those of a whole run from index ``offset`` on (a number or a traced integer)."""
    import jax
    import jax.numpy as jnp

    n, used = plan.schedule.steps, plan.schedule.slots_used
    tables = plan.tables()
    t = {k: jnp.asarray(v) for k, v in tables.items()}
    count = len(plan.take_steps)
    # The sweep stops only where it takes or stores a state; between those, a plain loop.
    events = np.flatnonzero((tables["take"] >= 0) | (tables["store"] >= 0))
    events = events[events >= 1]

    def rules():
        # The bwd is traced after the caller's promotion context has closed.
        return jax.numpy_dtype_promotion("standard")

    def stepper(params, probes, offset):
        step = step_of(params)
        dt = jnp.asarray(plan.dt, dtype=jnp.float64)

        def one(x, i):
            i = i + offset
            return step(x, jnp.asarray(plan.dt, dtype=x[plan.keys[0]].dtype), i,
                        jnp.asarray(i, jnp.float64) * dt)

        def advance(x, k0, k1):
            def body(i, g):
                g = one(g, i)
                j = t["probe"][i + 1]
                return {k: v + jnp.where(j >= 0, probes[k][jnp.maximum(j, 0)], 0)
                        if k in probes else v for k, v in g.items()}
            return jax.lax.fori_loop(k0, k1, body, x)

        return one, advance

    def put(buffers, index, x):
        # Index -1 writes nothing (the row is rewritten with itself): no spare row held.
        at = jnp.maximum(index, 0)
        return {k: b.at[at].set(jnp.where(index >= 0, x[k], b[at])) for k, b in buffers.items()}

    def sweep(params, x0, probes, offset, keep):
        _, advance = stepper(params, probes, offset)
        taken = {k: jnp.zeros((max(count, 1), *x0[k].shape), x0[k].dtype) for k in plan.names}
        # Rows 0..used-1 are the slots, ``used`` the working state.
        rows = used + (plan.schedule.working_step >= 0)
        slots = {k: jnp.zeros((rows, *v.shape), v.dtype).at[0].set(v) for k, v in
                 x0.items()} if keep else {}

        def event(carry, e):
            x, k, taken, slots = carry
            x = advance(x, k, e)
            taken = put(taken, t["take"][e], x)
            slots = put(slots, t["store"][e], x)
            return (x, e, taken, slots), None

        x, last = x0, 0
        if len(events):
            (x, last, taken, slots), _ = jax.lax.scan(
                event, (x0, jnp.asarray(0, jnp.int64), taken, slots), jnp.asarray(events))
        x = advance(x, last, n)
        return x, {k: v[:count] for k, v in taken.items()}, slots

    # The offset is an argument (an integer: its cotangent is float0), not a closed-over
    # value, so that one compiled pass serves segments at any offset.
    @jax.custom_vjp
    def core(params, x0, probes, offset):
        with rules():
            x, taken, _ = sweep(params, x0, probes, offset, keep=False)
        return x, taken

    def fwd(params, x0, probes, offset):
        with rules():
            x, taken, slots = sweep(params, x0, probes, offset, keep=True)
        return (x, taken), (params, probes, slots, offset)

    def bwd(res, cts):
        params, probes, slots, offset = res
        ct_final, ct_taken = cts
        with rules():
            _, advance = stepper(params, probes, offset)

            def join(cot, gprobe, k):
                # The adjoint of x_k: what flows back plus its capture's cotangent; a probe at k
                # has it as gradient.
                # A segment that takes nothing has empty cotangent buffers: nothing to index.
                j, p = t["take"][k], t["probe"][k]
                cot = {key: v + jnp.where(j >= 0, ct_taken[key][jnp.maximum(j, 0)], 0)
                       if key in ct_taken and count else v for key, v in cot.items()}
                return cot, put(gprobe, p, cot)

            gprobe = {k: jnp.zeros_like(v) for k, v in probes.items()}
            cot, gprobe = join(dict(ct_final), gprobe, n)
            gp = {k: jnp.zeros_like(v) for k, v in params.items()}

            def row(carry, r):
                slots, cot, gp, gprobe = carry
                x = advance({k: v[r["src"]] for k, v in slots.items()}, r["k0"], r["k1"])
                # Most rows store nothing: skip the write rather than rewrite a row in place.
                slots = jax.lax.cond(r["dst"] >= 0, lambda s: put(s, r["dst"], x),
                                     lambda s: s, slots)

                def back(args):
                    cot, gp, gprobe = args
                    k = r["k1"]
                    _, pull = jax.vjp(lambda p, g: stepper(p, probes, offset)[0](g, k),
                                      params, x)
                    dp, dx = pull(cot)
                    dx, gprobe = join(dx, gprobe, k)
                    return dx, jax.tree_util.tree_map(jnp.add, gp, dp), gprobe

                cot, gp, gprobe = jax.lax.cond(r["reverse"], back, lambda a: a,
                                               (cot, gp, gprobe))
                return (slots, cot, gp, gprobe), None

            rows = {k: t[k] for k in ("src", "k0", "k1", "dst", "reverse")}
            (_, cot, gp, gprobe), _ = jax.lax.scan(row, (slots, cot, gp, gprobe), rows)
        return gp, cot, gprobe, np.zeros(np.shape(offset), dtype=jax.dtypes.float0)

    core.defvjp(fwd, bwd)
    return core(params, fields, probes, jnp.asarray(offset, dtype=jnp.int64))


# --------------------------------------------------------------------------------- torch


def run_torch(plan: Plan, step_of: StepOf, scalars: Callable[[int], tuple],
              params: dict[str, Any], fields: dict[str, Any], probes: dict[str, Any]
              ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The final fields and the taken ones (one mapping per take step), differentiable in
    ``params``, ``fields`` and ``probes`` by torch autograd (first order)."""
    job = _TorchJob(plan, step_of, scalars, tuple(params), tuple(probes))
    flat = _binomial_run().apply(job, *params.values(), *(fields[k] for k in plan.keys),
                              *probes.values())
    final = dict(zip(plan.keys, flat[:len(plan.keys)], strict=True))
    rest, width = flat[len(plan.keys):], len(plan.names)
    taken = [dict(zip(plan.names, rest[i * width:(i + 1) * width], strict=True))
             for i in range(len(plan.take_steps))]
    return final, taken


@dataclass(frozen=True)
class _TorchJob:
    plan: Plan
    step_of: StepOf
    scalars: Callable[[int], tuple]
    param_names: tuple[str, ...]
    probe_names: tuple[str, ...]

    def unflatten(self, flat: Sequence[Any]) -> tuple[dict, dict, dict]:
        a, b = len(self.param_names), len(self.param_names) + len(self.plan.keys)
        return (dict(zip(self.param_names, flat[:a], strict=True)),
                dict(zip(self.plan.keys, flat[a:b], strict=True)),
                dict(zip(self.probe_names, flat[b:], strict=True)))

    def advance(self, step: Any, probes: Mapping[str, Any], x: dict, k0: int, k1: int) -> dict:
        slot = self.plan.probe_slot
        for i in range(k0, k1):
            x = step(x, *self.scalars(i))
            if i + 1 in slot:
                x = {k: v + probes[k][slot[i + 1]] if k in probes else v for k, v in x.items()}
        return x


@functools.cache
def _binomial_run() -> type:
    """The torch Function, made on first use (torch is imported only where it runs)."""
    import torch

    class BinomialRun(torch.autograd.Function):
        """The run's steps with the binomial schedule's backward pass."""

        @staticmethod
        def forward(ctx, job: _TorchJob, *flat):  # type: ignore[override]
            plan, schedule = job.plan, job.plan.schedule
            params, x, probes = job.unflatten(flat)
            step = job.step_of(params)
            slots: dict[int, dict] = {0: x}
            taken, wanted = [], set(plan.take_steps)
            for i in range(schedule.steps):
                x = job.advance(step, probes, x, i, i + 1)
                if i + 1 in wanted:
                    # Copies: a capture is never an alias of the final state (or a slot).
                    taken.append([x[k].clone() for k in plan.names])
                if i + 1 in schedule.sweep_stores:
                    slots[schedule.sweep_stores[i + 1]] = x
                if i + 1 == schedule.working_step:
                    slots[WORKING] = x
            ctx.job, ctx.slots = job, slots
            ctx.save_for_backward(*flat)
            return (*(x[k] for k in plan.keys), *(v for state in taken for v in state))

        @staticmethod
        def backward(ctx, *grads):  # type: ignore[override]
            job, slots = ctx.job, ctx.slots
            ctx.slots = None
            plan, keys = job.plan, job.plan.keys
            params, _, probes = job.unflatten(ctx.saved_tensors)
            needed = ctx.needs_input_grad[1:1 + len(params)]
            leaves = {k: v.detach().requires_grad_(need)
                      for (k, v), need in zip(params.items(), needed, strict=True)}
            step = job.step_of(leaves)
            taken_at = {s: i for i, s in enumerate(plan.take_steps)}
            width = len(plan.names)
            gp = {k: torch.zeros_like(v) for k, v in leaves.items() if v.requires_grad}
            gprobe = {k: torch.zeros_like(v) for k, v in probes.items()}

            def join(cot: dict, k: int) -> dict:
                if k in taken_at:
                    at = len(keys) + taken_at[k] * width
                    cot = {**cot, **{name: cot[name] + grads[at + m]
                                     for m, name in enumerate(plan.names)}}
                if k in plan.probe_slot and k >= 1:
                    for name in gprobe:
                        gprobe[name][plan.probe_slot[k]] = cot[name]
                return cot

            cot = join(dict(zip(keys, grads[:len(keys)], strict=True)), plan.schedule.steps)
            for row in plan.schedule.rows:
                with torch.no_grad():
                    x = job.advance(step, probes, slots[row.src], row.k0, row.k1)
                if row.dst >= 0:
                    slots[row.dst] = x
                if not row.reverse:
                    continue
                with torch.enable_grad():
                    inputs = {k: v.detach().requires_grad_(True) for k, v in x.items()}
                    out = step(inputs, *job.scalars(row.k1))
                    pairs = [(out[k], cot[k]) for k in keys if out[k].requires_grad]
                    wrt = [*inputs.values(), *(leaves[k] for k in gp)]
                    found = torch.autograd.grad([o for o, _ in pairs], wrt,
                                                [c for _, c in pairs], allow_unused=True) \
                        if pairs else [None] * len(wrt)
                back = {k: torch.zeros_like(x[k]) if g is None else g
                        for k, g in zip(keys, found[:len(keys)], strict=True)}
                for k, g in zip(gp, found[len(keys):], strict=True):
                    if g is not None:
                        gp[k] = gp[k] + g
                cot = join(back, row.k1)
            return (None, *(gp.get(k) for k in params), *(cot[k] for k in keys),
                    *(gprobe[k] for k in probes))

    return BinomialRun
