"""Lorenz-63 system, classic fourth-order Runge-Kutta; the four RK stages are the stages.

Any number of trajectories are advanced together along the ``trajectory`` dimension, from one
starting point (``kind: point``, optionally spread) or from one given point each (``kind: points``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from array_api_compat import array_namespace
from pydantic import Field, model_validator

from simkit.solver import (
    AbstractSolver,
    Coordinate,
    Diagnostic,
    FieldSpec,
    SolverModel,
    Stage,
)


class Lorenz63Params(SolverModel):
    sigma: float = Field(10.0, gt=0)
    rho: float = Field(28.0, gt=0)
    beta: float = Field(8.0 / 3.0, gt=0)
    trajectories: int = Field(1, ge=1, description="trajectories advanced together")


class Lorenz63Initial(SolverModel):
    kind: Literal["point", "points"] = "point"
    x: float = Field(1.0, description="point: starting x of every trajectory")
    y: float = Field(1.0, description="point: starting y of every trajectory")
    z: float = Field(1.0, description="point: starting z of every trajectory")
    points: list[Annotated[list[float], Field(min_length=3, max_length=3)]] | None = Field(
        None, min_length=1, description="points: [x, y, z] of each trajectory")
    spread: float = Field(0.0, ge=0, description="std of a gaussian perturbation per trajectory")

    @model_validator(mode="after")
    def _points_with_kind(self) -> Lorenz63Initial:
        if self.kind == "points" and self.points is None:
            raise ValueError("expected points: [[x, y, z], ...] with kind: points, given none")
        if self.kind == "point" and self.points is not None:
            raise ValueError("expected points only with kind: points, given kind: point")
        single = sorted(self.model_fields_set & {"x", "y", "z"})
        if self.kind == "points" and single:
            raise ValueError(f"expected {', '.join(single)} only with kind: point, given kind: "
                             f"points")
        return self


class Lorenz63(AbstractSolver):
    """dx/dt = sigma (y - x), dy/dt = x (rho - z) - y, dz/dt = x y - beta z."""

    name = "lorenz63"
    version = "1"
    description = "Lorenz-63, classic RK4 (stages: k1, k2, k3, k4)"
    Params = Lorenz63Params
    Initial = Lorenz63Initial
    time_units = "1"
    differentiable = ("sigma", "rho", "beta")

    def __init__(self, params: Lorenz63Params) -> None:
        self.params = params

    def fields(self) -> list[FieldSpec]:
        return [FieldSpec(name, ("trajectory",), "1", f"Lorenz-63 {name}") for name in "xyz"]

    def coordinates(self) -> list[Coordinate]:
        return [Coordinate("trajectory", np.arange(self.params.trajectories), "1",
                           "trajectory index")]

    def initial_state(self, initial: Lorenz63Initial, rng: np.random.Generator) -> dict[str, np.ndarray]:
        n = self.params.trajectories
        if initial.kind == "points":
            if len(initial.points) != n:
                raise ValueError(f"initial.points: expected {n} points (params.trajectories), "
                                 f"given {len(initial.points)}")
            columns = np.array(initial.points, dtype=float).T
            start = {name: columns[i] for i, name in enumerate("xyz")}
        else:
            start = {"x": initial.x, "y": initial.y, "z": initial.z}
        return {name: value + initial.spread * rng.standard_normal(n) for name, value in start.items()}

    def _rhs(self, x, y, z):
        p = self.params
        return p.sigma * (y - x), x * (p.rho - z) - y, x * y - p.beta * z

    def stages(self) -> list[Stage]:
        rhs = self._rhs

        def k1(state, dt):
            return {**state, "k1": rhs(state["x"], state["y"], state["z"])}

        def k2(state, dt):
            x, y, z, k = state["x"], state["y"], state["z"], state["k1"]
            h = 0.5 * dt
            return {**state, "k2": rhs(x + h * k[0], y + h * k[1], z + h * k[2])}

        def k3(state, dt):
            x, y, z, k = state["x"], state["y"], state["z"], state["k2"]
            h = 0.5 * dt
            return {**state, "k3": rhs(x + h * k[0], y + h * k[1], z + h * k[2])}

        def k4(state, dt):
            x, y, z = state["x"], state["y"], state["z"]
            a, b, c = state["k1"], state["k2"], state["k3"]
            d = rhs(x + dt * c[0], y + dt * c[1], z + dt * c[2])
            w = dt / 6.0
            new = [v + w * (a[i] + 2 * b[i] + 2 * c[i] + d[i]) for i, v in enumerate((x, y, z))]
            return {**state, "x": new[0], "y": new[1], "z": new[2]}

        return [Stage("k1", k1), Stage("k2", k2), Stage("k3", k3), Stage("k4", k4)]

    def diagnostics(self) -> list[Diagnostic]:
        def energy(state):
            x, y, z = state["x"], state["y"], state["z"]
            return 0.5 * array_namespace(x).mean(x * x + y * y + z * z)

        def mean_z(state):
            z = state["z"]
            return array_namespace(z).mean(z)

        return [
            Diagnostic("energy", energy, "1", "mean of (x2 + y2 + z2) / 2 over trajectories"),
            Diagnostic("mean_z", mean_z, "1", "mean z over trajectories"),
        ]

    def max_stable_dt(self) -> None:
        return None

    def default_dt(self) -> float:
        return 0.01
