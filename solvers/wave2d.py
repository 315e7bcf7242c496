"""2D wave equation, velocity Verlet (kick, drift, kick) on a periodic grid.

Stages: ``kick1`` (half kick of the velocity), ``drift`` (displacement), ``kick2`` (half kick).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from array_api_compat import array_namespace
from pydantic import Field

from simkit.solver import AbstractSolver, Diagnostic, FieldSpec, ScratchPool, SolverModel, Stage
from solvers import _stencil
from solvers._grid import grid_coordinates, periodic_laplacian


class Wave2DParams(SolverModel):
    speed: float = Field(1.0, gt=0, description="wave speed c [m s-1]")
    shape: list[Annotated[int, Field(ge=3)]] = Field([128, 128], min_length=2, max_length=2)
    spacing: float = Field(1.0, gt=0, description="grid spacing [m]")


class Wave2DInitial(SolverModel):
    kind: Literal["gaussian", "mode"] = "gaussian"
    amplitude: float = 1.0
    width: float = Field(8.0, gt=0, description="standard deviation of the gaussian [m]")
    mode: list[Annotated[int, Field(ge=0)]] = Field([1, 1], min_length=2, max_length=2,
                                                    description="wave numbers [ky, kx]")


class Wave2D(AbstractSolver):
    """u_tt = c^2 (u_xx + u_yy); the velocity v = u_t is a field of its own."""

    name = "wave2d"
    version = "1"
    description = "2D wave equation, velocity Verlet (stages: kick1, drift, kick2)"
    Params = Wave2DParams
    Initial = Wave2DInitial
    time_units = "s"
    differentiable = ("speed",)

    def __init__(self, params: Wave2DParams) -> None:
        self.params = params

    def fields(self) -> list[FieldSpec]:
        return [FieldSpec("u", ("y", "x"), "m", "displacement"),
                FieldSpec("v", ("y", "x"), "m s-1", "velocity")]

    def coordinates(self):
        return grid_coordinates(self.params.shape, self.params.spacing)

    def initial_state(self, initial: Wave2DInitial, rng: np.random.Generator):
        y, x = (c.values for c in self.coordinates())
        yy, xx = np.meshgrid(y, x, indexing="ij")
        if initial.kind == "gaussian":
            r2 = (xx - x.mean()) ** 2 + (yy - y.mean()) ** 2
            u = initial.amplitude * np.exp(-r2 / (2 * initial.width**2))
        else:
            (ky, kx), (ny, nx) = initial.mode, self.params.shape
            h = self.params.spacing
            u = (initial.amplitude * np.cos(2 * math.pi * ky * yy / (ny * h))
                 * np.cos(2 * math.pi * kx * xx / (nx * h)))
        return {"u": u, "v": np.zeros_like(u)}

    def mode_frequency(self, mode: tuple[int, int], dt: float) -> float:
        """Angular frequency of a standing mode under this scheme (discrete dispersion)."""
        (ky, kx), (ny, nx), h = mode, self.params.shape, self.params.spacing
        c = self.params.speed
        omega2 = (4 * c**2 / h**2) * (math.sin(math.pi * ky / ny) ** 2
                                      + math.sin(math.pi * kx / nx) ** 2)
        return math.acos(1 - 0.5 * dt**2 * omega2) / dt

    def stages(self) -> list[Stage]:
        c2 = self.params.speed**2
        inv_h2 = 1.0 / self.params.spacing**2

        def kick(state, dt):
            accel = c2 * periodic_laplacian(state["u"], inv_h2)
            return {**state, "v": state["v"] + (0.5 * dt) * accel}

        def drift(state, dt):
            return {**state, "u": state["u"] + dt * state["v"]}

        # Kernels: no temporaries on NumPy and torch (arrays of one pool per step function), and
        # on JAX the stencil form XLA fuses best.
        pool = ScratchPool()

        def kick_numpy(state, dt):
            accel = _stencil.laplacian_numpy(state["u"], inv_h2, pool)
            accel *= c2
            return {**state, "v": _stencil.axpy_numpy(accel, 0.5 * dt, state["v"], pool)}

        def kick_jax(state, dt):
            accel = c2 * _stencil.periodic_laplacian_jax(state["u"], inv_h2)
            return {**state, "v": state["v"] + (0.5 * dt) * accel}

        def drift_numpy(state, dt):
            return {**state, "u": _stencil.axpy_numpy(state["v"], dt, state["u"], pool)}

        def kick_torch(state, dt):
            accel = _stencil.laplacian_torch(state["u"], inv_h2, pool).mul_(c2)
            return {**state, "v": _stencil.axpy_torch(accel, 0.5 * dt, state["v"], pool)}

        def drift_torch(state, dt):
            return {**state, "u": _stencil.axpy_torch(state["v"], dt, state["u"], pool)}

        kick_kernels = {"numpy": kick_numpy, "jax": kick_jax,
                        "torch": _stencil.eager_torch(kick_torch, kick)}
        return [Stage("kick1", kick, kernels=kick_kernels),
                Stage("drift", drift, kernels={
                    "numpy": drift_numpy, "torch": _stencil.eager_torch(drift_torch, drift)}),
                Stage("kick2", kick, kernels=kick_kernels)]

    def diagnostics(self) -> list[Diagnostic]:
        area, c2 = self.params.spacing**2, self.params.speed**2
        inv_h2 = 1.0 / self.params.spacing**2

        def kinetic(state):
            v = state["v"]
            return 0.5 * area * array_namespace(v).sum(v * v)

        def potential(state):
            u = state["u"]
            xp = array_namespace(u)
            gx = xp.roll(u, -1, axis=1) - u
            gy = xp.roll(u, -1, axis=0) - u
            return 0.5 * c2 * area * inv_h2 * xp.sum(gx * gx + gy * gy)

        return [
            Diagnostic("kinetic", kinetic, "m4 s-2", "kinetic energy (unit density)"),
            Diagnostic("potential", potential, "m4 s-2", "potential energy (unit density)"),
            Diagnostic("energy", lambda s: kinetic(s) + potential(s), "m4 s-2", "total energy"),
            Diagnostic("center", lambda s: s["u"][self.params.shape[0] // 2,
                                                  self.params.shape[1] // 2],
                       "m", "displacement at the grid center"),
        ]

    def max_stable_dt(self) -> float:
        return self.params.spacing / (self.params.speed * math.sqrt(2))

    def default_dt(self) -> float:
        return 0.35 * self.params.spacing / self.params.speed
