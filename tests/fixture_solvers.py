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


class HistogramParams(SolverModel):
    size: int = 8
    bins: int = 4
    rate: float = 0.9
    #: Which declaration the "bad" diagnostic breaks: "none" (no bad diagnostic), "flat" (declared
    #: scalar, returns a vector) or "scalar" (declared with a bin dimension, returns a scalar).
    bad: str = "none"


class Histogram(_Decay):
    """u *= rate every step; ``hist`` is a vector diagnostic along a ``bin`` dimension."""

    name = "histogram"
    description = "vector-valued diagnostics"
    Params = HistogramParams

    def coordinates(self):
        return [Coordinate("i", np.arange(self.params.size), "1", "index"),
                Coordinate("bin", np.arange(self.params.bins), "1", "bin index")]

    def diagnostics(self):
        bins = self.params.bins

        def hist(s):
            xp = array_namespace(s["u"])
            total = xp.sum(s["u"])
            return xp.stack([total * (k + 1) for k in range(bins)])

        found = [Diagnostic("total", lambda s: array_namespace(s["u"]).sum(s["u"]), "1", "sum"),
                 Diagnostic("hist", hist, "1", "sum times bin number", dims=("bin",))]
        if self.params.bad == "flat":
            found.append(Diagnostic("flat", hist, "1", "declared scalar, is a vector"))
        if self.params.bad == "scalar":
            found.append(Diagnostic("vec", found[0].fn, "1", "declared a vector, is a scalar",
                                    dims=("bin",)))
        return found

    def stages(self):
        rate = self.params.rate
        return [Stage("decay", lambda s, dt: {**s, "u": s["u"] * rate})]


class SquareThenShift(_Decay):
    """Stage ``square`` adds the probe ``sq = u * u``; stage ``shift`` then updates ``sq`` and
    ``u`` in place (numpy and torch): a capture after ``square`` must not see those updates."""

    name = "square_then_shift"
    description = "in-place updates after a captured stage"

    def stages(self):
        def square(state, dt):
            return {**state, "sq": state["u"] * state["u"]}

        def shift(state, dt):
            sq, u = state["sq"], state["u"]
            if hasattr(u, "mul_"):
                sq.add_(5.0)
                u.mul_(0.5)
                return state
            if isinstance(u, np.ndarray):
                sq += 5.0
                u *= 0.5
                return state
            return {**state, "sq": sq + 5.0, "u": u * 0.5}  # immutable arrays (JAX)

        probe = FieldSpec("sq", ("i",), "1", "u squared")
        return [Stage("square", square, probes=(probe,)), Stage("shift", shift)]


class SpringParams(SolverModel):
    size: int = 3


class Spring(_Decay):
    """Harmonic oscillators by symplectic Euler (stage ``kick`` then ``drift``): the state goes up
    and down with history, for conditions that turn true and false again."""

    name = "spring"
    description = "x'' = -x, symplectic Euler"
    Params = SpringParams

    def fields(self):
        return [FieldSpec("x", ("i",), "1", "position"), FieldSpec("v", ("i",), "1", "velocity")]

    def initial_state(self, initial, rng):
        phase = np.arange(self.params.size) * 0.7
        return {"x": np.cos(phase), "v": -np.sin(phase)}

    def diagnostics(self):
        return [Diagnostic("pos", lambda s: s["x"][0], "1", "x[0]"),
                Diagnostic("energy", lambda s: array_namespace(s["x"]).sum(
                    s["x"] * s["x"] + s["v"] * s["v"]), "1", "sum of x^2 + v^2")]

    def stages(self):
        return [Stage("kick", lambda s, dt: {**s, "v": s["v"] - dt * s["x"]}),
                Stage("drift", lambda s, dt: {**s, "x": s["x"] + dt * s["v"]})]
