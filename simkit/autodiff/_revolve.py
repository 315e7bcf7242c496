"""Binomial checkpointing (Griewank's revolve): the offline schedule that reverses a run of n
steps holding at most a given number of states, with the fewest recomputed steps.

Pure Python, no arrays: the schedule is a table of rows that the JAX and torch executors
(``simkit.autodiff._reverse``) follow.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

#: The slot index of the working state in a row's ``src`` (the state the forward sweep ended
#: its pass through the first reversed step with).
WORKING = -1


def beta(slots: int, repetitions: int) -> int:
    """C(slots + repetitions, slots): the most steps ``slots`` stored states reverse when no step
    is advanced more than ``repetitions`` times (0 for negative ``repetitions``)."""
    return math.comb(slots + repetitions, slots) if repetitions >= 0 else 0


def repetitions(steps: int, slots: int) -> int:
    """The least r with ``beta(slots, r) >= steps``."""
    r = 0
    while beta(slots, r) < steps:
        r += 1
    return r


def fewest_advances(steps: int, slots: int) -> int:
    """The fewest steps advanced (forward sweep included, the step evaluated by each step's own
    backward excluded) to reverse ``steps`` steps with ``slots`` stored states: r n - C(s+r, s+1)
    (Griewank 1992), r = ``repetitions(steps, slots)``."""
    if steps <= 1:
        return 0
    r = repetitions(steps, slots)
    return r * steps - beta(slots + 1, r - 1)


def split(steps: int, slots: int) -> int:
    """Where an optimal schedule stores its next state: ``m`` such that reversing the last
    ``steps - m`` steps with ``slots - 1`` states and then the first ``m`` with ``slots`` is
    cheapest (both parts within the repetitions of the whole)."""
    r = repetitions(steps, slots)
    low = max(beta(slots, r - 2), steps - beta(slots - 1, r), 1)
    high = min(beta(slots, r - 1), steps - beta(slots - 1, r - 1), steps - 1)
    return high if high >= low else low


@dataclass(frozen=True)
class Row:
    """One action of the backward pass: load the state of step ``k0`` from slot ``src``
    (``WORKING``: the state the forward sweep handed over), advance it to step ``k1``, store it
    in slot ``dst`` if ``dst >= 0``, and if ``reverse`` take step ``k1`` (``k1 -> k1 + 1``)
    backward from it."""

    src: int
    k0: int
    k1: int
    dst: int
    reverse: bool


@dataclass(frozen=True)
class BinomialSchedule:
    """How to reverse ``steps`` steps holding at most ``slots`` stored states.

    The forward sweep runs every step once, stores the state of step k in slot
    ``sweep_stores[k]`` and keeps the state of step ``working_step`` (or none, -1) as the
    working state; ``rows`` are then followed in order. Steps are reversed last to first.
    """

    steps: int
    slots: int
    sweep_stores: dict[int, int]
    working_step: int
    rows: tuple[Row, ...]

    @property
    def recomputed_steps(self) -> int:
        """Steps the backward pass advances (the forward sweep and each step's own backward
        excluded)."""
        return sum(row.k1 - row.k0 for row in self.rows)

    @property
    def slots_used(self) -> int:
        """The most stored states held at once (slot indices are reused as a stack)."""
        used = [*self.sweep_stores.values(), *(row.dst for row in self.rows if row.dst >= 0)]
        return max(used) + 1

    @property
    def states_held(self) -> int:
        """Stored states plus the working state a step's backward starts from."""
        return self.slots_used + 1


@functools.lru_cache(maxsize=32)
def binomial_schedule(steps: int, slots: int) -> BinomialSchedule:
    """The schedule reversing ``steps`` steps (at least 1) with ``slots`` (at least 1) stored
    states, the first of them the run's initial state; fewer slots mean more recomputation, down
    to n(n-1)/2 steps with one."""
    rows: list[Row] = []

    def reverse(a: int, b: int, slot: int, free: int) -> None:
        # The state of step a is in ``slot``; ``free`` more slots are free above it.
        while b - a > 1 and free > 0:
            m = a + split(b - a, free + 1)
            rows.append(Row(slot, a, m, slot + 1, False))
            reverse(m, b, slot + 1, free - 1)
            b = m
        if b - a == 1:
            rows.append(Row(slot, a, a, -1, True))
            return
        for k in range(b - 1, a - 1, -1):
            rows.append(Row(slot, a, k, -1, True))

    reverse(0, steps, 0, slots - 1)
    # The forward sweep does the first rows' advances: the chain of stores that starts at step 0
    # and the advance of the first reversed step, whose state it keeps as the working state.
    stores, first = {0: 0}, 0
    while not rows[first].reverse:
        stores[rows[first].k1] = rows[first].dst
        first += 1
    head = rows[first]
    working = -1
    if head.k1 > head.k0:
        working = head.k1
        head = Row(WORKING, head.k1, head.k1, -1, True)
    return BinomialSchedule(steps, slots, stores, working, (head, *rows[first + 1:]))
