"""Gray-Scott reaction-diffusion on a periodic square, forward Euler.

Stages: ``react`` (u v^2 autocatalysis, feed, kill) then ``diffuse``. Defaults follow Pearson,
"Complex patterns in a simple system", Science 261 (1993): D_u = 2e-5, D_v = 1e-5, a 2.5 x 2.5
box on a 256 x 256 grid, dt = 1, and a central square of (u, v) = (1/2, 1/4) with 1% noise on an
otherwise (1, 0) state.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from array_api_compat import array_namespace
from pydantic import Field

from simkit.solver import AbstractSolver, Diagnostic, FieldSpec, ScratchPool, SolverModel, Stage
from solvers import _stencil
from solvers._grid import grid_coordinates, periodic_laplacian


class GrayScottParams(SolverModel):
    feed: float = Field(0.0367, ge=0, description="feed rate F")
    kill: float = Field(0.0649, ge=0, description="kill rate k")
    diffusivity_u: float = Field(2e-5, gt=0)
    diffusivity_v: float = Field(1e-5, gt=0)
    shape: list[Annotated[int, Field(ge=3)]] = Field([256, 256], min_length=2, max_length=2)
    length: float = Field(2.5, gt=0, description="side of the square box")


class GrayScottInitial(SolverModel):
    kind: Literal["square", "uniform"] = "square"
    size: float = Field(0.1953125, gt=0, description="side of the seeded square (20 cells)")
    noise: float = Field(0.01, ge=0, description="relative noise on the seeded square")


class GrayScott(AbstractSolver):
    """u_t = D_u lap u - u v^2 + F (1 - u);  v_t = D_v lap v + u v^2 - (F + k) v."""

    name = "gray_scott"
    version = "1"
    description = "Gray-Scott reaction-diffusion (stages: react, diffuse)"
    Params = GrayScottParams
    Initial = GrayScottInitial
    time_units = "1"
    differentiable = ("feed", "kill", "diffusivity_u", "diffusivity_v")

    def __init__(self, params: GrayScottParams) -> None:
        self.params = params
        self.spacing = params.length / params.shape[1]

    def fields(self):
        return [FieldSpec("u", ("y", "x"), "1", "substrate concentration"),
                FieldSpec("v", ("y", "x"), "1", "autocatalyst concentration")]

    def coordinates(self):
        return grid_coordinates(self.params.shape, self.spacing, "1")

    def initial_state(self, initial: GrayScottInitial, rng: np.random.Generator):
        shape = tuple(self.params.shape)
        u, v = np.ones(shape), np.zeros(shape)
        if initial.kind == "square":
            half = max(1, round(initial.size / self.spacing / 2))
            cy, cx = shape[0] // 2, shape[1] // 2
            box = (slice(cy - half, cy + half), slice(cx - half, cx + half))
            u[box], v[box] = 0.5, 0.25
            u *= 1 + initial.noise * (2 * rng.random(shape) - 1)
            v *= 1 + initial.noise * (2 * rng.random(shape) - 1)
        return {"u": u, "v": v}

    def stages(self):
        p = self.params
        inv_h2 = 1.0 / self.spacing**2

        def react(state, dt):
            u, v = state["u"], state["v"]
            uvv = u * v * v
            return {**state, "u": u + dt * (p.feed * (1 - u) - uvv),
                    "v": v + dt * (uvv - (p.feed + p.kill) * v)}

        def diffuse(state, dt):
            u, v = state["u"], state["v"]
            return {**state, "u": u + (dt * p.diffusivity_u) * periodic_laplacian(u, inv_h2),
                    "v": v + (dt * p.diffusivity_v) * periodic_laplacian(v, inv_h2)}

        # Kernels: no temporaries on NumPy and torch (arrays of one pool per step function), and
        # on JAX the stencil form XLA fuses best; each in the specification's order of operations
        # (torch's react to rounding: feed * (1 - u) as feed - feed * u).
        pool = ScratchPool(size=12)

        def react_numpy(state, dt):
            u, v = state["u"], state["v"]
            uvv = pool.take(u)
            np.multiply(u, v, out=uvv)
            uvv *= v
            new_u = pool.take(u)
            np.subtract(1, u, out=new_u)
            new_u *= p.feed
            new_u -= uvv
            new_u *= dt
            new_u += u
            new_v = pool.take(v)
            np.multiply(v, p.feed + p.kill, out=new_v)
            np.subtract(uvv, new_v, out=new_v)
            new_v *= dt
            new_v += v
            return {**state, "u": new_u, "v": new_v}

        def diffuse_numpy(state, dt):
            new = {}
            for name, diffusivity in (("u", p.diffusivity_u), ("v", p.diffusivity_v)):
                lap = _stencil.laplacian_numpy(state[name], inv_h2, pool)
                new[name] = _stencil.axpy_numpy(lap, dt * diffusivity, state[name], pool)
            return {**state, **new}

        def diffuse_jax(state, dt):
            u, v = state["u"], state["v"]
            lap = _stencil.periodic_laplacian_jax
            return {**state, "u": u + (dt * p.diffusivity_u) * lap(u, inv_h2),
                    "v": v + (dt * p.diffusivity_v) * lap(v, inv_h2)}

        def react_torch(state, dt):
            import torch

            u, v = state["u"], state["v"]
            uvv = pool.take(u)
            torch.mul(u, v, out=uvv).mul_(v)
            new_u = pool.take(u)
            torch.mul(u, -p.feed, out=new_u).add_(p.feed).sub_(uvv).mul_(dt).add_(u)
            new_v = pool.take(v)
            torch.mul(v, -(p.feed + p.kill), out=new_v).add_(uvv).mul_(dt).add_(v)
            return {**state, "u": new_u, "v": new_v}

        def diffuse_torch(state, dt):
            new = {}
            for name, diffusivity in (("u", p.diffusivity_u), ("v", p.diffusivity_v)):
                lap = _stencil.laplacian_torch(state[name], inv_h2, pool)
                new[name] = _stencil.axpy_torch(lap, dt * diffusivity, state[name], pool)
            return {**state, **new}

        return [Stage("react", react, kernels={
                    "numpy": react_numpy, "torch": _stencil.eager_torch(react_torch, react)}),
                Stage("diffuse", diffuse, kernels={
                    "numpy": diffuse_numpy, "jax": diffuse_jax,
                    "torch": _stencil.eager_torch(diffuse_torch, diffuse)})]

    def diagnostics(self):
        def covered(state):
            v = state["v"]
            xp = array_namespace(v)
            return xp.mean(xp.astype(v > 0.1, v.dtype))

        def v_std(state):
            v = state["v"]
            xp = array_namespace(v)
            return xp.std(v)

        def mean_u(state):
            u = state["u"]
            return array_namespace(u).mean(u)

        return [
            Diagnostic("covered", covered, "1", "fraction of the box where v > 0.1"),
            Diagnostic("v_std", v_std, "1", "standard deviation of v (0 when uniform)"),
            Diagnostic("mean_u", mean_u, "1", "mean substrate concentration"),
        ]

    def max_stable_dt(self) -> float:
        d = max(self.params.diffusivity_u, self.params.diffusivity_v)
        return self.spacing**2 / (4 * d)

    def default_dt(self) -> float:
        return min(1.0, 0.8 * self.max_stable_dt())
