"""2D Ising model, Metropolis with checkerboard updates; stochastic but reproducible bit for bit.

Stages: ``black`` then ``white`` (each updates one sublattice, whose sites do not interact). One
step is one sweep. Random numbers come from a counter-based hash of (seed, step, sublattice, site).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from array_api_compat import array_namespace
from pydantic import Field, field_validator

from simkit.solver import (
    SEED_KEY,
    STEP_KEY,
    AbstractSolver,
    Constants,
    Coordinate,
    Diagnostic,
    FieldSpec,
    ScratchPool,
    SolverModel,
    Stage,
    counter_uniform,
)
from solvers import _checkerboard

#: Onsager's critical temperature, J = k_B = 1.
CRITICAL_TEMPERATURE = 2.0 / math.log(1.0 + math.sqrt(2.0))


class Ising2DParams(SolverModel):
    temperature: float = Field(2.0, gt=0, description="k_B T / J")
    coupling: float = Field(1.0, description="J")
    field: float = Field(0.0, description="external field h")
    shape: list[Annotated[int, Field(ge=2)]] = Field([64, 64], min_length=2, max_length=2)

    @field_validator("shape")
    @classmethod
    def _even(cls, shape: list[int]) -> list[int]:
        if any(n % 2 for n in shape):
            raise ValueError(f"expected even sides (a checkerboard), given {shape}")
        return shape


class Ising2DInitial(SolverModel):
    kind: Literal["random", "up"] = "random"


def onsager_energy(temperature: float, coupling: float = 1.0) -> float:
    """Exact energy per site of the infinite 2D Ising model (Onsager 1944)."""
    beta_j = coupling / temperature
    k = 2 * math.sinh(2 * beta_j) / math.cosh(2 * beta_j) ** 2
    # Complete elliptic integral K(k) by the arithmetic-geometric mean.
    a, b = 1.0, math.sqrt(1 - k * k)
    while abs(a - b) > 1e-15:
        a, b = (a + b) / 2, math.sqrt(a * b)
    elliptic_k = math.pi / (2 * a)
    t = math.tanh(2 * beta_j)
    return -coupling / math.tanh(2 * beta_j) * (1 + (2 / math.pi) * (2 * t * t - 1) * elliptic_k)


def onsager_magnetization(temperature: float, coupling: float = 1.0) -> float:
    """Exact spontaneous magnetization per site (Yang 1952); 0 above the critical point."""
    s = math.sinh(2 * coupling / temperature)
    return (1 - s**-4) ** 0.125 if s > 1 else 0.0


class Ising2D(AbstractSolver):
    """Metropolis sampling of E = -J sum_<ij> s_i s_j - h sum_i s_i on a periodic lattice."""

    name = "ising2d"
    version = "1"
    description = "2D Ising, checkerboard Metropolis (stages: black, white)"
    Params = Ising2DParams
    Initial = Ising2DInitial
    time_units = "1"

    def __init__(self, params: Ising2DParams) -> None:
        self.params = params
        ny, nx = params.shape
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        self.constants = Constants(lambda: {
            "index": (yy * nx + xx).astype(np.int64),
            "index_u32": (yy * nx + xx).astype(np.uint32),  # for the kernels' 32-bit hashing
            "black": (yy + xx) % 2 == 0,
            "white": (yy + xx) % 2 == 1,
        })

    def fields(self):
        return [FieldSpec("spin", ("y", "x"), "1", "spin (+1 or -1)")]

    def coordinates(self):
        ny, nx = self.params.shape
        return [Coordinate("y", np.arange(ny), "1", "row"),
                Coordinate("x", np.arange(nx), "1", "column")]

    def initial_state(self, initial: Ising2DInitial, rng: np.random.Generator):
        shape = tuple(self.params.shape)
        if initial.kind == "up":
            return {"spin": np.ones(shape)}
        return {"spin": rng.choice([-1.0, 1.0], size=shape)}

    def stages(self):
        p = self.params

        def sweep(color: str, offset: int):
            def stage(state, dt):
                s = state["spin"]
                xp = array_namespace(s)
                c = self.constants.like(s)
                neighbours = (xp.roll(s, 1, axis=0) + xp.roll(s, -1, axis=0)
                              + xp.roll(s, 1, axis=1) + xp.roll(s, -1, axis=1))
                cost = 2 * s * (p.coupling * neighbours + p.field)
                draw = counter_uniform(c["index"], state[SEED_KEY],
                                       2 * state[STEP_KEY] + offset, s)
                flip = c[color] & (draw < xp.exp(-cost / p.temperature))
                return {**state, "spin": xp.where(flip, -s, s)}
            return stage

        # Kernels: the same draws from 32-bit unsigned hashing (module ``_checkerboard``), on
        # NumPy without temporaries.
        pool = ScratchPool()

        def sweep_kernel(color: str, offset: int, library: str):
            def stage(state, dt):
                s = state["spin"]
                c = self.constants.like(s)
                key = _checkerboard.draw_key(state[SEED_KEY], 2 * state[STEP_KEY] + offset)
                if library == "jax":
                    spin = _checkerboard.sweep_jax(s, c["index_u32"], c[color], key, p.coupling,
                                                   p.field, p.temperature)
                else:
                    spin = _checkerboard.sweep_numpy(s, c["index_u32"], c[color], key,
                                                     p.coupling, p.field, p.temperature, pool)
                return {**state, "spin": spin}
            return stage

        return [Stage(name, sweep(name, offset),
                      kernels={library: sweep_kernel(name, offset, library)
                               for library in ("numpy", "jax")})
                for name, offset in (("black", 0), ("white", 1))]

    def diagnostics(self):
        p = self.params

        def magnetization(state):
            s = state["spin"]
            return array_namespace(s).mean(s)

        def abs_magnetization(state):
            s = state["spin"]
            xp = array_namespace(s)
            return xp.abs(xp.mean(s))

        def energy(state):
            s = state["spin"]
            xp = array_namespace(s)
            bonds = s * (xp.roll(s, 1, axis=0) + xp.roll(s, 1, axis=1))
            return xp.mean(-p.coupling * bonds - p.field * s)

        return [Diagnostic("magnetization", magnetization, "1", "mean spin"),
                Diagnostic("abs_magnetization", abs_magnetization, "1", "|mean spin|"),
                Diagnostic("energy", energy, "1", "energy per site (units of J)")]

    def max_stable_dt(self) -> None:
        return None

    def default_dt(self) -> float:
        return 1.0  # one sweep
