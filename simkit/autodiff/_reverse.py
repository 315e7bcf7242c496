"""A run's steps under a binomial schedule: a forward sweep that stores the schedule's states,
and a hand-written backward pass that follows its rows, taking each step backward by its own vjp
(the backend's ``GradOps.run_binomial`` executes the plan: ``jax.custom_vjp`` on JAX, a
``torch.autograd.Function`` on torch).

The run is ``x_{k+1} = step(x_k) + probe_{k+1}`` for k < n; the sweep also returns the states at
``take_steps`` (the captures), whose cotangents join the adjoint on the way back, and the
adjoint at each probe step is the probe's gradient. Step 0 (its probe and capture) is the
caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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

    @property
    def working(self) -> int:
        """The key of the working state among the sweep's stores (``src`` of a row)."""
        return WORKING

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
