"""Reverse mode on JAX (``GradOps``): ``jax.vjp``, segments recomputed by ``jax.checkpoint``
inside a ``lax.scan``, and the binomial schedule as a ``jax.custom_vjp`` whose backward pass
follows the schedule's rows (tables of the schedule as data, one ``lax.scan`` over them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from simkit.backends._base import SegmentPlan, Taken


class JaxGradOps:
    """Reverse mode on JAX (see ``simkit.backends._base.GradOps``)."""

    #: JAX kernels are pure functions, differentiated like the rest.
    kernels = None

    def rules(self) -> Any:
        # A parameter given as data is a strongly typed real array where the solver's code
        # saw a Python float: under strict promotion its product with a complex spectrum
        # (navier_stokes2d) would be refused, so the run is traced under standard rules.
        return jax.numpy_dtype_promotion("standard")

    def value_and_grad(self, fn: Callable[..., Any], args: tuple[Any, ...]
                       ) -> tuple[Any, tuple[Any, ...]]:
        found: tuple[Any, tuple[Any, ...]] = jax.jit(
            jax.value_and_grad(fn, argnums=tuple(range(len(args)))))(*args)
        return found

    def vjp(self, fn: Callable[..., Any], *primals: Any
            ) -> tuple[Any, Callable[[Any], tuple[Any, ...]]]:
        return jax.vjp(fn, *primals)

    def compiled(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return jax.jit(fn)

    def param(self, value: Any) -> Any:
        return jnp.asarray(value)

    def index(self, step: int) -> Any:
        return jnp.asarray(step, jnp.int64)

    def run_segments(self, plan: SegmentPlan, step: Callable[..., Any],
                     fields: dict[str, Any], probes: Mapping[str, Any] | None,
                     offset: Any) -> Taken:
        return _run_segments(plan, step, fields, probes, offset)

    def run_binomial(self, plan: Any, step_of: Callable[[Mapping[str, Any]], Any],
                     params: dict[str, Any], fields: dict[str, Any],
                     probes: dict[str, Any], offset: Any) -> Taken:
        final, taken = _run_binomial(plan, step_of, params, fields, probes, offset)
        return final, [taken], [(0, j, s) for j, s in enumerate(plan.take_steps)]


# ------------------------------------------------------------------------------ segments


def _add_probe(probes: Mapping[str, Any] | None, f: dict[str, Any], slot: Any) -> dict[str, Any]:
    if probes is None:
        return f
    return {k: v + jnp.where(slot >= 0, probes[k][jnp.maximum(slot, 0)], 0)
            if k in probes else v for k, v in f.items()}


def _segment_function(plan: SegmentPlan, step: Callable[..., Any],
                      probes: Mapping[str, Any] | None, offset: Any, dtype: Any
                      ) -> Callable[..., Any]:
    """One segment's steps as a scan, its taken states gathered at its ``tslot`` rows."""
    dt = jnp.asarray(plan.dt, dtype=dtype)
    dt64 = jnp.asarray(plan.dt, dtype=jnp.float64)

    def segment(f: dict[str, Any], xs: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
        index, pslot, tslot = xs

        def body(g: dict[str, Any], x: tuple[Any, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
            i, p = x
            i = i + offset  # the step's index in the whole run (a traced one may come)
            g = step(g, dt, i, jnp.asarray(i, jnp.float64) * dt64)
            g = _add_probe(probes, g, p)
            return g, {k: g[k] for k in plan.names}

        f, ys = jax.lax.scan(body, f, (index, pslot))
        # Only the states taken in this segment leave it (tslot pads with 0, cut later).
        return f, {k: v[tslot] for k, v in ys.items()}

    if plan.remat:
        segment = jax.checkpoint(segment, prevent_cse=False)
    return segment


def _tables(plan: SegmentPlan, start: int, stop: int, width: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    index = np.arange(start, stop, dtype=np.int64)
    pslot = np.asarray([plan.probe_slot.get(i + 1, -1) for i in index], dtype=np.int64)
    slots = [i - start for i in index if i + 1 in plan.take]
    tslot = np.asarray(slots + [0] * (width - len(slots)), dtype=np.int64)
    return index, pslot, tslot, [i + 1 for i in index if i + 1 in plan.take]


def _run_segments(plan: SegmentPlan, step: Callable[..., Any], fields: dict[str, Any],
                  probes: Mapping[str, Any] | None, offset: Any) -> Taken:
    n, length = plan.steps, plan.length
    dtype = next(iter(fields.values())).dtype
    segment = _segment_function(plan, step, probes, offset, dtype)
    full, rest = divmod(n, length)
    width = max([len(_tables(plan, s * length, (s + 1) * length, 0)[3]) for s in range(full)]
                + [1])
    pieces: list[dict[str, Any]] = []
    order: list[tuple[int, int | None, int]] = []
    if full:
        parts = [_tables(plan, s * length, (s + 1) * length, width) for s in range(full)]
        xs = tuple(jnp.asarray(np.stack([p[k] for p in parts])) for k in range(3))
        fields, ys = jax.lax.scan(segment, fields, xs)
        pieces.append({k: v.reshape((full * width, *v.shape[2:])) for k, v in ys.items()})
        for s, p in enumerate(parts):
            order += [(0, s * width + j, step_) for j, step_ in enumerate(p[3])]
    if rest:
        index, pslot, tslot, kept = _tables(plan, full * length, n, max(width, 1))
        fields, ys = segment(fields, (jnp.asarray(index), jnp.asarray(pslot),
                                      jnp.asarray(tslot)))
        pieces.append(ys)
        order += [(len(pieces) - 1, j, step_) for j, step_ in enumerate(kept)]
    return fields, pieces, order


# ------------------------------------------------------------------------------ binomial


def _put(buffers: dict[str, Any], index: Any, x: Mapping[str, Any]) -> dict[str, Any]:
    # Index -1 writes nothing (the row is rewritten with itself): no spare row held.
    at = jnp.maximum(index, 0)
    return {k: b.at[at].set(jnp.where(index >= 0, x[k], b[at])) for k, b in buffers.items()}


def _rules() -> Any:
    # The bwd is traced after the caller's promotion context has closed.
    return jax.numpy_dtype_promotion("standard")


class _Machine:
    """The binomial passes' operations on JAX (``simkit.autodiff._reverse.Machine``): tables
    as traced data, ``lax`` loops and branches, buffers of states updated functionally; the
    adjoint is ``(cot, gp, gprobe)``: the state's, the parameters' and the probes'."""

    def __init__(self, plan: Any, step_of: Callable[[Mapping[str, Any]], Any], params: Any,
                 probes: Any, offset: Any, ct_taken: Any = None) -> None:
        self.plan, self.step_of = plan, step_of
        self.params, self.probes, self.offset, self.ct_taken = params, probes, offset, ct_taken
        self.tables = self.t = {k: jnp.asarray(v) for k, v in plan.tables().items()}
        self.count = len(plan.take_steps)
        self.one, self.advance = self.stepper(params)

    def stepper(self, params: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
        plan, t, probes, offset = self.plan, self.t, self.probes, self.offset
        step = self.step_of(params)
        dt = jnp.asarray(plan.dt, dtype=jnp.float64)

        def one(x: dict[str, Any], i: Any) -> Any:
            i = i + offset
            return step(x, jnp.asarray(plan.dt, dtype=x[plan.keys[0]].dtype), i,
                        jnp.asarray(i, jnp.float64) * dt)

        def advance(x: dict[str, Any], k0: Any, k1: Any) -> Any:
            def body(i: Any, g: dict[str, Any]) -> dict[str, Any]:
                g = one(g, i)
                j = t["probe"][i + 1]
                return {k: v + jnp.where(j >= 0, probes[k][jnp.maximum(j, 0)], 0)
                        if k in probes else v for k, v in g.items()}
            return jax.lax.fori_loop(k0, k1, body, x)

        return one, advance

    def buffers(self, x0: Any, keep: bool) -> tuple[Any, Any]:
        taken = {k: jnp.zeros((max(self.count, 1), *x0[k].shape), x0[k].dtype)
                 for k in self.plan.names}
        # Rows 0..used-1 are the slots, ``used`` the working state.
        rows = self.plan.schedule.slots_used + (self.plan.schedule.working_step >= 0)
        slots = {k: jnp.zeros((rows, *v.shape), v.dtype).at[0].set(v) for k, v in
                 x0.items()} if keep else {}
        return taken, slots

    def take(self, taken: Any, index: Any, x: Any) -> Any:
        return _put(taken, index, x)

    def put(self, slots: Any, index: Any, x: Any) -> Any:
        return _put(slots, index, x)

    def get(self, slots: Any, index: Any) -> Any:
        return {k: v[index] for k, v in slots.items()}

    def scan(self, body: Callable[[Any, Any], Any], carry: Any, xs: Any) -> Any:
        xs = jax.tree_util.tree_map(jnp.asarray, xs)
        found, _ = jax.lax.scan(lambda c, x: (body(c, x), None), carry, xs)
        return found

    def when(self, pred: Any, then: Callable[[Any], Any], operand: Any) -> Any:
        return jax.lax.cond(pred, then, lambda a: a, operand)

    def join(self, adjoint: Any, k: Any) -> Any:
        """The adjoint of x_k: what flows back plus its capture's cotangent; a probe at k has
        it as gradient. A segment that takes nothing has empty cotangent buffers: nothing to
        index."""
        cot, gp, gprobe = adjoint
        ct_taken = self.ct_taken
        j, p = self.t["take"][k], self.t["probe"][k]
        cot = {key: v + jnp.where(j >= 0, ct_taken[key][jnp.maximum(j, 0)], 0)
               if key in ct_taken and self.count else v for key, v in cot.items()}
        return cot, gp, _put(gprobe, p, cot)

    def back(self, x: Any, k: Any, adjoint: Any) -> Any:
        cot, gp, gprobe = adjoint
        _, pull = jax.vjp(lambda p, g: self.stepper(p)[0](g, k), self.params, x)
        dp, dx = pull(cot)
        return dx, jax.tree_util.tree_map(jnp.add, gp, dp), gprobe


def _run_binomial(plan: Any, step_of: Callable[[Mapping[str, Any]], Any], params: Any,
                  fields: Any, probes: Any, offset: Any) -> tuple[Any, Any]:
    """The final state and the taken ones, with the binomial backward pass as the vjp."""
    count = len(plan.take_steps)

    def sweep(params: Any, x0: Any, probes: Any, offset: Any, keep: bool) -> tuple[Any, ...]:
        with _rules():
            machine = _Machine(plan, step_of, params, probes, offset)
            x, taken, slots = plan.sweep(machine, x0, keep)
        return x, {k: v[:count] for k, v in taken.items()}, slots

    # The offset is an argument (an integer: its cotangent is float0), not a closed-over
    # value, so that one compiled pass serves segments at any offset.
    @jax.custom_vjp
    def core(params: Any, x0: Any, probes: Any, offset: Any) -> tuple[Any, Any]:
        x, taken, _ = sweep(params, x0, probes, offset, keep=False)
        return x, taken

    def fwd(params: Any, x0: Any, probes: Any, offset: Any) -> tuple[Any, Any]:
        x, taken, slots = sweep(params, x0, probes, offset, keep=True)
        return (x, taken), (params, probes, slots, offset)

    def bwd(res: Any, cts: Any) -> tuple[Any, ...]:
        params, probes, slots, offset = res
        ct_final, ct_taken = cts
        with _rules():
            machine = _Machine(plan, step_of, params, probes, offset, ct_taken)
            adjoint = (dict(ct_final), {k: jnp.zeros_like(v) for k, v in params.items()},
                       {k: jnp.zeros_like(v) for k, v in probes.items()})
            cot, gp, gprobe = plan.backward(machine, slots, adjoint)
        return gp, cot, gprobe, np.zeros(np.shape(offset), dtype=jax.dtypes.float0)

    core.defvjp(fwd, bwd)
    found: tuple[Any, Any] = core(params, fields, probes, jnp.asarray(offset, dtype=jnp.int64))
    return found
