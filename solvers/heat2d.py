"""2D heat equation, explicit FTCS on a uniform grid, periodic or fixed-value boundaries.

Stages: ``laplacian`` (five-point stencil) then ``update`` (forward Euler).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import array_api_extra as xpx
import numpy as np
from array_api_compat import array_namespace
from pydantic import Field, model_validator

from simkit.solver import (
    AbstractSolver,
    Coordinate,
    Diagnostic,
    FieldSpec,
    ScratchPool,
    SolverModel,
    Stage,
)
from solvers import _numba_stencil, _stencil
from solvers._grid import grid_coordinates, periodic_laplacian

GridSize = Annotated[int, Field(ge=3)]


class Heat2DParams(SolverModel):
    diffusivity: float = Field(1.0, gt=0, description="thermal diffusivity [m2 s-1]")
    shape: list[GridSize] = Field([128, 128], min_length=2, max_length=2,
                                  description="grid points [ny, nx]")
    spacing: float = Field(1.0, gt=0, description="grid spacing [m]")
    boundary: Literal["periodic", "fixed"] = "periodic"
    boundary_value: float = Field(0.0, description="edge temperature when boundary is fixed [K]")


class Heat2DInitial(SolverModel):
    kind: Literal["gaussian", "mode", "uniform", "noise", "file"] = "gaussian"
    amplitude: float = Field(1.0, description="peak value [K]")
    width: float = Field(10.0, gt=0, description="standard deviation of the gaussian [m]")
    mode: list[Annotated[int, Field(ge=0)]] = Field(
        [1, 1], min_length=2, max_length=2,
        description="wave numbers [ky, kx] of a Fourier mode (kind: mode)")
    path: str | None = Field(None, description="a .npy file of shape [ny, nx] (kind: file)")

    @model_validator(mode="after")
    def _file_exists(self) -> Heat2DInitial:
        if self.kind == "file":
            if self.path is None:
                raise ValueError("expected 'path' of a .npy file with kind: file, given none")
            if not Path(self.path).is_file():
                raise ValueError(f"expected an existing .npy file for initial.path, given "
                                 f"{self.path!r}")
        return self


class Heat2D(AbstractSolver):
    """du/dt = D (d2u/dx2 + d2u/dy2), forward Euler in time, second order in space."""

    name = "heat2d"
    version = "1"
    description = "2D heat equation, explicit FTCS (stages: laplacian, update)"
    Params = Heat2DParams
    Initial = Heat2DInitial
    time_units = "s"
    differentiable = ("diffusivity",)

    def __init__(self, params: Heat2DParams) -> None:
        self.params = params

    def fields(self) -> list[FieldSpec]:
        return [FieldSpec("u", ("y", "x"), "K", "temperature")]

    def coordinates(self) -> list[Coordinate]:
        return grid_coordinates(self.params.shape, self.params.spacing)

    def domain_length(self) -> tuple[float, float]:
        """Length (Ly, Lx) of the domain whose modes this grid resolves."""
        ny, nx = self.params.shape
        h = self.params.spacing
        if self.params.boundary == "periodic":
            return ny * h, nx * h
        return (ny - 1) * h, (nx - 1) * h

    def initial_state(self, initial: Heat2DInitial, rng: np.random.Generator) -> dict[str, np.ndarray]:
        y, x = (c.values for c in self.coordinates())
        yy, xx = np.meshgrid(y, x, indexing="ij")
        if initial.kind == "gaussian":
            r2 = (xx - x.mean()) ** 2 + (yy - y.mean()) ** 2
            u = initial.amplitude * np.exp(-r2 / (2 * initial.width**2))
        elif initial.kind == "mode":
            factor = 2 * math.pi if self.params.boundary == "periodic" else math.pi
            (ky, kx), (ly, lx) = initial.mode, self.domain_length()
            u = (initial.amplitude * np.sin(factor * ky * yy / ly) ** (ky != 0)
                 * np.sin(factor * kx * xx / lx) ** (kx != 0))
        elif initial.kind == "uniform":
            u = np.full(xx.shape, initial.amplitude)
        elif initial.kind == "noise":
            u = initial.amplitude * rng.standard_normal(xx.shape)
        else:
            u = np.load(initial.path, allow_pickle=False)
            if not isinstance(u, np.ndarray) or u.dtype.kind not in "biuf":
                kind = f"a {u.dtype} array" if isinstance(u, np.ndarray) else "an .npz archive"
                raise ValueError(f"initial.path: expected a .npy array of real numbers, given "
                                 f"{kind} in {initial.path}")
            u = u.astype(np.float64)
            if u.shape != xx.shape:
                raise ValueError(f"initial.path: expected an array of shape {list(xx.shape)}, "
                                 f"given {list(u.shape)} in {initial.path}")
        if self.params.boundary == "fixed":
            u[0, :] = u[-1, :] = u[:, 0] = u[:, -1] = self.params.boundary_value
        return {"u": u}

    def stages(self) -> list[Stage]:
        inv_h2 = 1.0 / self.params.spacing**2
        diffusivity = self.params.diffusivity
        periodic = self.params.boundary == "periodic"

        def laplacian(state, dt):
            u = state["u"]
            xp = array_namespace(u)
            if periodic:
                lap = periodic_laplacian(u, inv_h2)
            else:
                inner = (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:]
                         - 4 * u[1:-1, 1:-1]) * inv_h2
                lap = xpx.pad(inner, 1, xp=xp)
            return {**state, "laplacian": lap}

        def update(state, dt):
            return {**state, "u": state["u"] + (dt * diffusivity) * state["laplacian"]}

        # Kernels: the same stages without temporaries on NumPy and torch (arrays of one pool per
        # step function), and on JAX the stencil form XLA fuses best (slices already do when
        # fixed).
        pool = ScratchPool()

        def laplacian_numpy(state, dt):
            lap = _stencil.laplacian_numpy(state["u"], inv_h2, pool, periodic=periodic)
            return {**state, "laplacian": lap}

        def update_numpy(state, dt):
            u = _stencil.axpy_numpy(state["laplacian"], dt * diffusivity, state["u"], pool)
            return {**state, "u": u}

        fused = self._numba_pass()
        if fused is not None:  # the optional numba extra: parallel loops instead
            # The Laplacian's loop also makes the updated u (one pass where two would read and
            # write five arrays); ``update`` hands that out when it is given the very arrays and
            # time step it was made from (arrays a stage is given are never written to), else
            # computes it. The entry is taken once, so nothing is held past the step.
            ahead: dict[str, tuple] = {}

            # numba is imported (and each loop compiled) on the first NumPy step, not before.
            def laplacian_numpy(state, dt):
                u = state["u"]
                lap, new = pool.take(u), pool.take(u)
                ahead["u"] = (u, lap, fused(u, dt, lap, new, True), new)
                return {**state, "laplacian": lap}

            def update_numpy(state, dt):
                u, lap = state["u"], state["laplacian"]
                factor = u.dtype.type(dt * diffusivity)
                made = ahead.pop("u", None)
                if made is not None and made[0] is u and made[1] is lap and made[2] == factor:
                    return {**state, "u": made[3]}
                out = pool.take(u)
                _numba_stencil.loops()["axpy"](lap, factor, u, out)
                return {**state, "u": out}

        def laplacian_jax(state, dt):
            return {**state, "laplacian": _stencil.periodic_laplacian_jax(state["u"], inv_h2)}

        def laplacian_torch(state, dt):
            lap = _stencil.laplacian_torch(state["u"], inv_h2, pool, periodic=periodic)
            return {**state, "laplacian": lap}

        def update_torch(state, dt):
            u = _stencil.axpy_torch(state["laplacian"], dt * diffusivity, state["u"], pool)
            return {**state, "u": u}

        probe = FieldSpec("laplacian", ("y", "x"), "K m-2", "five-point Laplacian of u")
        laplacian_kernels = {"numpy": laplacian_numpy,
                             "torch": _stencil.eager_torch(laplacian_torch, laplacian)}
        if periodic:
            laplacian_kernels["jax"] = laplacian_jax
        return [Stage("laplacian", laplacian, probes=(probe,), kernels=laplacian_kernels),
                Stage("update", update, kernels={
                    "numpy": update_numpy, "torch": _stencil.eager_torch(update_torch, update)})]

    def step_kernels(self) -> dict:
        """Whole steps: on torch the two stages' kernels in one call (no stage state checked
        between them); with the numba extra (on grids where it is used), a NumPy step in one
        loop that writes only the new u: no Laplacian array is made when no one reads it."""
        # This class's own stages (a subclass's may differ; it does not inherit these anyway).
        laplacian, update = (stage.kernels for stage in Heat2D.stages(self))
        kernels = {"torch": lambda state, dt: update["torch"](laplacian["torch"](state, dt), dt)}
        fused = self._numba_pass()
        if fused is None:
            return kernels
        pool = ScratchPool()

        def step_numpy(state, dt):
            u = state["u"]
            new = pool.take(u)
            fused(u, dt, new, new, False)
            return {**state, "u": new}

        return {**kernels, "numpy": step_numpy}

    def _numba_pass(self):
        """``fused(u, dt, lap, new, keep) -> factor``: one parallel numba pass writing
        ``u + factor * laplacian(u)`` into ``new`` (and the Laplacian into ``lap`` with
        ``keep``), ``factor = dt * diffusivity`` in u's dtype; None where the numba loops are not
        used (not installed, turned off, or a grid too small)."""
        if not _numba_stencil.available(int(np.prod(self.params.shape))):
            return None
        inv_h2 = 1.0 / self.params.spacing**2
        diffusivity = self.params.diffusivity
        stencil = ("periodic_laplacian_update" if self.params.boundary == "periodic"
                   else "fixed_laplacian_update")

        def fused(u, dt, lap, new, keep):
            factor = u.dtype.type(dt * diffusivity)
            _numba_stencil.loops()[stencil](u, u.dtype.type(inv_h2), u.dtype.type(4), factor,
                                            lap, new, keep)
            return factor

        return fused

    def diagnostics(self) -> list[Diagnostic]:
        area = self.params.spacing**2

        def energy(state):
            u = state["u"]
            return 0.5 * area * array_namespace(u).sum(u * u)

        def heat(state):
            u = state["u"]
            return area * array_namespace(u).sum(u)

        def max_abs(state):
            u = state["u"]
            xp = array_namespace(u)
            return xp.max(xp.abs(u))

        return [
            Diagnostic("energy", energy, "K2 m2", "half the integral of u squared"),
            Diagnostic("heat", heat, "K m2", "integral of u (conserved when periodic)"),
            Diagnostic("max_abs", max_abs, "K", "largest absolute temperature"),
        ]

    def max_stable_dt(self) -> float:
        return self.params.spacing**2 / (4 * self.params.diffusivity)

    def default_dt(self) -> float:
        return 0.8 * self.max_stable_dt()
