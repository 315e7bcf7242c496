"""Small solvers used by the tests, found through ``solver: fixture_solvers:Name``."""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace

from simkit.solver import AbstractSolver, Coordinate, Diagnostic, FieldSpec, SolverModel, Stage

TRACES = {"count": 0}


class DecayParams(SolverModel):
    size: int = 8


class NoInitial(SolverModel):
    pass


class _Decay(AbstractSolver):
    version = "1"
    Params = DecayParams
    Initial = NoInitial
    time_units = "s"

    def __init__(self, params: DecayParams) -> None:
        self.params = params

    def fields(self):
        return [FieldSpec("u", ("i",), "1", "decaying value")]

    def coordinates(self):
        return [Coordinate("i", np.arange(self.params.size), "1", "index")]

    def initial_state(self, initial, rng):
        return {"u": np.arange(1.0, self.params.size + 1.0)}

    def diagnostics(self):
        return [Diagnostic("total", lambda s: array_namespace(s["u"]).sum(s["u"]), "1", "sum")]

    def default_dt(self):
        return 1.0

    def max_stable_dt(self):
        return None


class InPlaceDecay(_Decay):
    """Halves ``u`` in place every step (torch and numpy only): captures must still be copies."""

    name = "inplace_decay"
    description = "halves u in place"

    def stages(self):
        def halve(state, dt):
            u = state["u"]
            if hasattr(u, "mul_"):
                u.mul_(0.5)
            else:
                u *= 0.5
            return state

        return [Stage("halve", halve)]


class CountingDecay(_Decay):
    """Multiplies ``u`` by (1 - dt / 10); counts how often its stage is traced or run."""

    name = "counting_decay"
    description = "counts traces"

    def stages(self):
        def decay(state, dt):
            TRACES["count"] += 1
            return {**state, "u": state["u"] * (1 - 0.1 * dt)}

        return [Stage("decay", decay)]


class Oscillator(_Decay):
    """u = sin(t) everywhere, set from the simulated time the stage finds in the state."""

    name = "oscillator"
    description = "u = sin(t)"

    def initial_state(self, initial, rng):
        return {"u": np.zeros(self.params.size)}

    def diagnostics(self):
        return [Diagnostic("value", lambda s: s["u"][0], "1", "u[0]")]

    def stages(self):
        def follow(state, dt):
            xp = array_namespace(state["u"])
            return {**state, "u": state["u"] * 0 + xp.sin(xp.asarray(state["time"] + dt))}

        return [Stage("follow", follow)]


class Doubling(_Decay):
    """Doubles u every step, overflowing to inf after about 1020 steps in float64."""

    name = "doubling"
    description = "u *= 2"

    def stages(self):
        return [Stage("scale", lambda s, dt: {**s, "v": s["u"] * 2.0}),
                Stage("double", lambda s, dt: {**s, "u": s["v"] * 1.0})]
