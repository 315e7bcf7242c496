"""A run's steps under a binomial schedule: a forward sweep that stores the schedule's states,
and a hand-written backward pass that follows its rows, taking each step backward by its own vjp.

``Plan.sweep`` and ``Plan.backward`` are the algorithm, written once over a ``Machine``: what
one library does of it (a loop of steps, a buffer of states, a branch, a step's vjp). The
backend's ``GradOps.run_binomial`` makes the machines and hooks the two passes into its
library's reverse mode (``jax.custom_vjp`` on JAX, a ``torch.autograd.Function`` on torch).

The run is ``x_{k+1} = step(x_k) + probe_{k+1}`` for k < n; the sweep also returns the states at
``take_steps`` (the captures), whose cotangents join the adjoint on the way back, and the
adjoint at each probe step is the probe's gradient. Step 0 (its probe and capture) is the
caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from simkit.autodiff._revolve import WORKING, BinomialSchedule

#: ``params -> step``: the step of a solver rebuilt around those parameter values.
StepOf = Callable[[Mapping[str, Any]], Callable[..., dict[str, Any]]]


class Machine(Protocol):
    """One library's operations of the binomial passes. Indices come from ``Plan.tables``
    (-1: none), as data where the library traces the passes."""

    #: ``Plan.tables``, as the machine indexes them.
    tables: Mapping[str, Any]

    def advance(self, x: Any, k0: Any, k1: Any) -> Any:
        """The state ``x`` of step ``k0`` taken to step ``k1`` (probes added)."""

    def buffers(self, x0: Any, keep: bool) -> tuple[Any, Any]:
        """Empty buffers of the taken states, and the slots (``x0`` in slot 0; none without
        ``keep``)."""

    def take(self, taken: Any, index: Any, x: Any) -> Any:
        """``taken`` with a copy of the taken fields of ``x`` at ``index``."""

    def put(self, slots: Any, index: Any, x: Any) -> Any:
        """``slots`` with ``x`` in slot ``index``."""

    def get(self, slots: Any, index: Any) -> Any:
        """The state in slot ``index``."""

    def scan(self, body: Callable[[Any, Any], Any], carry: Any, xs: Any) -> Any:
        """``carry`` through ``body(carry, x)`` for each ``x`` of ``xs`` (an array, or a
        mapping of arrays read row by row)."""

    def when(self, pred: Any, then: Callable[[Any], Any], operand: Any) -> Any:
        """``then(operand)`` where ``pred`` holds, else ``operand``."""

    def join(self, adjoint: Any, k: Any) -> Any:
        """The adjoint of step ``k``'s state: the capture's cotangent added, a probe's
        gradient noted."""

    def back(self, x: Any, k: Any, adjoint: Any) -> Any:
        """The adjoint before step ``k`` taken from the state ``x`` (the parameters' share
        noted)."""


@dataclass(frozen=True)
class Plan:
    """The binomial passes of a run: the schedule, where the captures and probes go, and the
    two passes over a library's machine."""

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

    def events(self) -> np.ndarray:
        """The steps after 0 where the sweep takes or stores a state: between them it runs a
        plain loop of steps."""
        tables = self.tables()
        events = np.flatnonzero((tables["take"] >= 0) | (tables["store"] >= 0))
        return events[events >= 1]

    def sweep(self, machine: Machine, x0: Any, keep: bool) -> tuple[Any, Any, Any]:
        """The forward sweep from ``x0``: the final state, the taken states, and the stored
        ones (with ``keep``)."""
        t = machine.tables
        taken, slots = machine.buffers(x0, keep)

        def event(carry: tuple[Any, ...], e: Any) -> tuple[Any, ...]:
            x, k, taken, slots = carry
            x = machine.advance(x, k, e)
            taken = machine.take(taken, t["take"][e], x)
            slots = machine.put(slots, t["store"][e], x)
            return x, e, taken, slots

        x, last = x0, 0
        events = self.events()
        if len(events):
            x, last, taken, slots = machine.scan(event, (x0, 0, taken, slots), events)
        return machine.advance(x, last, self.schedule.steps), taken, slots

    def backward(self, machine: Machine, slots: Any, adjoint: Any) -> Any:
        """The backward pass from the adjoint of the final state: the schedule's rows, each
        recomputing from a slot, storing, and where it says so taking its last step
        backward. Returns the adjoint of the initial state."""
        adjoint = machine.join(adjoint, self.schedule.steps)

        def row(carry: tuple[Any, Any], r: Mapping[str, Any]) -> tuple[Any, Any]:
            slots, adjoint = carry
            x = machine.advance(machine.get(slots, r["src"]), r["k0"], r["k1"])
            # Most rows store nothing: skip the write rather than rewrite a row in place.
            slots = machine.when(r["dst"] >= 0, lambda s: machine.put(s, r["dst"], x), slots)
            adjoint = machine.when(
                r["reverse"], lambda a: machine.join(machine.back(x, r["k1"], a), r["k1"]),
                adjoint)
            return slots, adjoint

        rows = {k: v for k, v in self.tables().items()
                if k in ("src", "k0", "k1", "dst", "reverse")}
        _, adjoint = machine.scan(row, (slots, adjoint), rows)
        return adjoint
