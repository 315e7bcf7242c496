"""Reverse mode on PyTorch (``GradOps``): autograd, segments recomputed by
``torch.utils.checkpoint``, and the binomial schedule as a ``torch.autograd.Function`` whose
backward pass follows the schedule's rows, taking each step backward by its own vjp."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from simkit.backends._base import SegmentPlan, Taken


class TorchGradOps:
    """Reverse mode on PyTorch (see ``simkit.backends._base.GradOps``)."""

    #: Torch kernels may write into scratch tensors (out=), which autograd refuses: a
    #: differentiated step goes by the stages' functions.
    kernels = False

    def __init__(self, backend: Any) -> None:
        self.backend, self.scalars = backend, backend.scalars

    def rules(self) -> Any:
        return contextlib.nullcontext()

    def value_and_grad(self, fn: Callable[..., Any], args: tuple[Any, ...]
                       ) -> tuple[Any, tuple[Any, ...]]:
        with torch.enable_grad():
            leaves = [_tracked(a) for a in args]
            value = fn(*leaves)
            inputs = [x for a in leaves for x in _flat(a)]
            found = torch.autograd.grad(value, inputs, allow_unused=True) if inputs else []
        found = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, found,
                                                                         strict=True)]
        return value.detach(), _unflatten(leaves, found)

    def vjp(self, fn: Callable[..., Any], *primals: Any
            ) -> tuple[Any, Callable[[Any], tuple[Any, ...]]]:
        with torch.enable_grad():
            leaves = [_tracked(a) for a in primals]
            out = fn(*leaves)
        inputs = [x for a in leaves for x in _flat(a)]

        def pull(cotangents: Any) -> tuple[Any, ...]:
            with torch.enable_grad():
                found = grads_of(_flat(out), inputs, _flat(cotangents))
            return _unflatten(leaves, [g.detach() for g in found])

        return _detached(out), pull

    def compiled(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn

    def param(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value
        return self.backend.asarray(np.asarray(value, dtype=np.float64))

    def index(self, step: int) -> Any:
        return step

    def run_segments(self, plan: SegmentPlan, step: Callable[..., Any],
                     fields: dict[str, Any], probes: Mapping[str, Any] | None,
                     offset: Any) -> Taken:
        return _run_segments(plan, step, self.scalars, fields, probes, offset)

    def run_binomial(self, plan: Any, step_of: Callable[[Mapping[str, Any]], Any],
                     params: dict[str, Any], fields: dict[str, Any],
                     probes: dict[str, Any], offset: Any) -> Taken:
        def scalars(i: int) -> tuple[Any, ...]:
            found: tuple[Any, ...] = self.scalars(plan.dt, i + offset,
                                                  (i + offset) * plan.dt)
            return found

        job = _Job(plan, step_of, scalars, tuple(params), tuple(probes))
        flat = BinomialRun.apply(  # type: ignore[no-untyped-call]
            job, *params.values(), *(fields[k] for k in plan.keys), *probes.values())
        final = dict(zip(plan.keys, flat[:len(plan.keys)], strict=True))
        rest, width = flat[len(plan.keys):], len(plan.names)
        taken = [dict(zip(plan.names, rest[i * width:(i + 1) * width], strict=True))
                 for i in range(len(plan.take_steps))]
        return final, taken, [(j, None, s) for j, s in enumerate(plan.take_steps)]


def grads_of(outputs: Sequence[Any], inputs: Sequence[Any], seeds: Sequence[Any]
             ) -> list[Any]:
    """The vjp of ``outputs`` seeded with ``seeds`` with respect to ``inputs``: outputs that do
    not depend on a tracked input are left out, and inputs nothing depends on get zeros."""
    pairs = [(o, s) for o, s in zip(outputs, seeds, strict=True) if o.requires_grad]
    found = torch.autograd.grad([o for o, _ in pairs], inputs, [s for _, s in pairs],
                                allow_unused=True) if pairs else [None] * len(inputs)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, found, strict=True)]


# ------------------------------------------------------------------------------ pytrees
# Dicts (in their order), tuples and lists of tensors, None for nothing.


def _flat(tree: Any) -> list[Any]:
    if tree is None:
        return []
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _flat(v)]
    if isinstance(tree, (tuple, list)):
        return [x for v in tree for x in _flat(v)]
    return [tree]


def _rebuilt(tree: Any, values: Any) -> Any:
    if tree is None:
        return None
    if isinstance(tree, dict):
        return {k: _rebuilt(v, values) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_rebuilt(v, values) for v in tree)
    return next(values)


def _unflatten(trees: Sequence[Any], flat: Sequence[Any]) -> tuple[Any, ...]:
    values = iter(flat)
    return tuple(_rebuilt(tree, values) for tree in trees)


def _tracked(tree: Any) -> Any:
    """Copies of the tensors of ``tree`` that autograd tracks, as leaves."""
    return _rebuilt(tree, iter([x.clone().requires_grad_(True) for x in _flat(tree)]))


def _detached(tree: Any) -> Any:
    return _rebuilt(tree, iter([x.detach() for x in _flat(tree)]))


# ------------------------------------------------------------------------------ segments


def _run_segments(plan: SegmentPlan, step: Callable[..., Any], scalars: Callable[..., Any],
                  fields: dict[str, Any], probes: Mapping[str, Any] | None,
                  offset: Any) -> Taken:
    keys, names = plan.keys, plan.names

    def segment(start: int, stop: int) -> Callable[..., tuple[Any, ...]]:
        def run(*flat: Any) -> tuple[Any, ...]:
            f = dict(zip(keys, flat, strict=True))
            out = []
            for i in range(start, stop):
                at = i + offset
                f = step(f, *scalars(plan.dt, at, at * plan.dt))
                if probes is not None and i + 1 in plan.probe_slot:
                    f = {k: v + probes[k][plan.probe_slot[i + 1]] if k in probes else v
                         for k, v in f.items()}
                if i + 1 in plan.take:
                    out += [f[k] for k in names]
            return (*[f[k] for k in keys], *out)
        return run

    pieces: list[dict[str, Any]] = []
    order: list[tuple[int, int | None, int]] = []
    # Under the caller's grad mode (never inference mode): checkpointing only where autograd
    # records, since there is nothing to recompute otherwise.
    remat = plan.remat and torch.is_grad_enabled()
    for first in range(0, plan.steps, plan.length):
        stop = min(first + plan.length, plan.steps)
        run = segment(first, stop)
        flat = [fields[k] for k in keys]
        result = checkpoint(run, *flat, use_reentrant=False) if remat else run(*flat)
        fields = dict(zip(keys, result[:len(keys)], strict=True))
        kept = [i + 1 for i in range(first, stop) if i + 1 in plan.take]
        rest = result[len(keys):]
        for j, step_ in enumerate(kept):
            pieces.append({k: rest[j * len(names) + m] for m, k in enumerate(names)})
            order.append((len(pieces) - 1, None, step_))
    return fields, pieces, order


# ------------------------------------------------------------------------------ binomial


@dataclass(frozen=True)
class _Job:
    plan: Any
    step_of: Callable[[Mapping[str, Any]], Any]
    scalars: Callable[[int], tuple[Any, ...]]
    param_names: tuple[str, ...]
    probe_names: tuple[str, ...]

    def unflatten(self, flat: Sequence[Any]
                  ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        a, b = len(self.param_names), len(self.param_names) + len(self.plan.keys)
        return (dict(zip(self.param_names, flat[:a], strict=True)),
                dict(zip(self.plan.keys, flat[a:b], strict=True)),
                dict(zip(self.probe_names, flat[b:], strict=True)))

    def advance(self, step: Any, probes: Mapping[str, Any], x: dict[str, Any], k0: int,
                k1: int) -> dict[str, Any]:
        slot = self.plan.probe_slot
        for i in range(k0, k1):
            x = step(x, *self.scalars(i))
            if i + 1 in slot:
                x = {k: v + probes[k][slot[i + 1]] if k in probes else v for k, v in x.items()}
        return x


class _Adjoint:
    """The backward pass's running sums beside the adjoint: the probes' gradients and the
    parameters' (those autograd asks for)."""

    def __init__(self, grads: Sequence[Any], leaves: dict[str, Any],
                 probes: dict[str, Any]) -> None:
        self.grads = grads
        self.gp = {k: torch.zeros_like(v) for k, v in leaves.items() if v.requires_grad}
        self.gprobe = {k: torch.zeros_like(v) for k, v in probes.items()}


class _Machine:
    """The binomial passes' operations on torch (``simkit.autodiff._reverse.Machine``): Python
    loops over the tables, states kept by slot in a dict, the taken ones as copies in a list;
    the adjoint is the state's, the parameters' and probes' gradients kept in ``sums``."""

    def __init__(self, job: _Job, step: Any, probes: dict[str, Any],
                 sums: _Adjoint | None = None, leaves: dict[str, Any] | None = None) -> None:
        self.job, self.step, self.probes, self.sums = job, step, probes, sums
        self.leaves = leaves or {}
        self.tables = job.plan.tables()

    def advance(self, x: Any, k0: Any, k1: Any) -> Any:
        with torch.no_grad():
            return self.job.advance(self.step, self.probes, x, int(k0), int(k1))

    def buffers(self, x0: Any, keep: bool) -> tuple[Any, Any]:
        return [], {0: x0} if keep else {}

    def take(self, taken: Any, index: Any, x: Any) -> Any:
        if index >= 0:
            # Copies: a capture is never an alias of the final state (or a slot).
            taken.append([x[k].clone() for k in self.job.plan.names])
        return taken

    def put(self, slots: Any, index: Any, x: Any) -> Any:
        if index >= 0:
            slots[int(index)] = x
        return slots

    def get(self, slots: Any, index: Any) -> Any:
        return slots[int(index)]

    def scan(self, body: Callable[[Any, Any], Any], carry: Any, xs: Any) -> Any:
        if isinstance(xs, Mapping):
            for i in range(len(next(iter(xs.values())))):
                carry = body(carry, {k: v[i].item() for k, v in xs.items()})
            return carry
        for x in xs:
            carry = body(carry, int(x))
        return carry

    def when(self, pred: Any, then: Callable[[Any], Any], operand: Any) -> Any:
        return then(operand) if pred else operand

    def join(self, cot: Any, k: Any) -> Any:
        plan, keys, sums = self.job.plan, self.job.plan.keys, self.sums
        assert sums is not None
        j, p = self.tables["take"][k], self.tables["probe"][k]
        if j >= 0:
            at = len(keys) + int(j) * len(plan.names)
            cot = {**cot, **{name: cot[name] + sums.grads[at + m]
                             for m, name in enumerate(plan.names)}}
        if p >= 0:
            for name in sums.gprobe:
                sums.gprobe[name][int(p)] = cot[name]
        return cot

    def back(self, x: Any, k: Any, cot: Any) -> Any:
        assert self.sums is not None
        return _step_back(self.job, self.step, x, k, cot, self.sums, self.leaves)


def _step_back(job: _Job, step: Any, x: dict[str, Any], k: int, cot: dict[str, Any],
               adjoint: _Adjoint, leaves: dict[str, Any]) -> dict[str, Any]:
    """The vjp of step ``k`` from the state ``x``: the adjoint before it (the parameters'
    share added to ``adjoint.gp``)."""
    keys = job.plan.keys
    with torch.enable_grad():
        inputs = {k_: v.detach().requires_grad_(True) for k_, v in x.items()}
        out = step(inputs, *job.scalars(k))
        pairs = [(out[k_], cot[k_]) for k_ in keys if out[k_].requires_grad]
        wrt = [*inputs.values(), *(leaves[k_] for k_ in adjoint.gp)]
        found = torch.autograd.grad([o for o, _ in pairs], wrt, [c for _, c in pairs],
                                    allow_unused=True) if pairs else [None] * len(wrt)
    back = {k_: torch.zeros_like(x[k_]) if g is None else g
            for k_, g in zip(keys, found[:len(keys)], strict=True)}
    for k_, g in zip(adjoint.gp, found[len(keys):], strict=True):
        if g is not None:
            adjoint.gp[k_] = adjoint.gp[k_] + g
    return back


class BinomialRun(torch.autograd.Function):
    """The run's steps with the binomial schedule's backward pass."""

    @staticmethod
    def forward(ctx: Any, job: _Job, *flat: Any) -> tuple[Any, ...]:  # type: ignore[override]
        plan = job.plan
        params, x, probes = job.unflatten(flat)
        x, taken, slots = plan.sweep(_Machine(job, job.step_of(params), probes), x, keep=True)
        ctx.job, ctx.slots = job, slots
        ctx.save_for_backward(*flat)
        return (*(x[k] for k in plan.keys), *(v for state in taken for v in state))

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> tuple[Any, ...]:  # type: ignore[override]
        job, slots = ctx.job, ctx.slots
        ctx.slots = None
        plan, keys = job.plan, job.plan.keys
        params, _, probes = job.unflatten(ctx.saved_tensors)
        needed = ctx.needs_input_grad[1:1 + len(params)]
        leaves = {k: v.detach().requires_grad_(need)
                  for (k, v), need in zip(params.items(), needed, strict=True)}
        sums = _Adjoint(grads, leaves, probes)
        machine = _Machine(job, job.step_of(leaves), probes, sums, leaves)
        cot = plan.backward(machine, slots, dict(zip(keys, grads[:len(keys)], strict=True)))
        return (None, *(sums.gp.get(k) for k in params), *(cot[k] for k in keys),
                *(sums.gprobe[k] for k in probes))
