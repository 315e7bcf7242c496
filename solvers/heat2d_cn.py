"""2D heat equation, implicit Crank-Nicolson: unconditionally stable, second order in time.

Stages: ``explicit_half`` (b = (I + dt/2 D L) u) then ``implicit_solve`` ((I - dt/2 D L) u' = b),
solved exactly in Fourier space for periodic boundaries and by conjugate gradients (a fixed
number of iterations, frozen once converged, so it compiles) for fixed-value boundaries.
"""

from __future__ import annotations

import math

import array_api_extra as xpx
import numpy as np
from array_api_compat import array_namespace
from pydantic import Field

from simkit.solver import Constants, Stage, repeat
from solvers._grid import periodic_laplacian
from solvers.heat2d import Heat2D, Heat2DInitial, Heat2DParams


class Heat2DCNParams(Heat2DParams):
    cg_iterations: int = Field(400, ge=1, description="conjugate-gradient iterations (fixed)")
    cg_tolerance: float = Field(1e-13, gt=0, description="relative residual that stops CG")


class Heat2DCN(Heat2D):
    """du/dt = D lap u, Crank-Nicolson in time, five-point Laplacian in space."""

    name = "heat2d_cn"
    version = "1"
    description = "2D heat equation, implicit Crank-Nicolson (stages: explicit_half, implicit_solve)"
    Params = Heat2DCNParams
    Initial = Heat2DInitial

    def __init__(self, params: Heat2DCNParams) -> None:
        super().__init__(params)
        self.constants = Constants(self._symbol)

    def _symbol(self) -> dict[str, np.ndarray]:
        """Eigenvalues of the periodic five-point Laplacian on the rfft grid."""
        ny, nx = self.params.shape
        h = self.params.spacing
        ky = np.fft.fftfreq(ny) * 2 * math.pi
        kx = np.fft.rfftfreq(nx) * 2 * math.pi
        kyy, kxx = np.meshgrid(ky, kx, indexing="ij")
        return {"lam": -(4 / h**2) * (np.sin(kyy / 2) ** 2 + np.sin(kxx / 2) ** 2)}

    def stages(self):
        p = self.params
        inv_h2 = 1.0 / p.spacing**2
        periodic = p.boundary == "periodic"

        def interior_laplacian(u):
            """Five-point Laplacian at interior points with zero values beyond them."""
            xp = array_namespace(u)
            z = xpx.pad(u, 1, xp=xp)
            return (z[:-2, 1:-1] + z[2:, 1:-1] + z[1:-1, :-2] + z[1:-1, 2:] - 4 * u) * inv_h2

        def explicit_half(state, dt):
            u = state["u"]
            a = 0.5 * dt * p.diffusivity
            if periodic:
                return {**state, "rhs": u + a * periodic_laplacian(u, inv_h2)}
            inner = u[1:-1, 1:-1]
            full = (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4 * inner) * inv_h2
            from_edges = full - interior_laplacian(inner)  # the fixed edges' share, both times
            return {**state, "rhs": inner + a * full + a * from_edges}

        def implicit_solve(state, dt):
            u, rhs = state["u"], state["rhs"]
            xp = array_namespace(u)
            a = 0.5 * dt * p.diffusivity
            if periodic:
                b_hat = xp.fft.rfftn(rhs)
                lam = self.constants.like(b_hat)["lam"]
                # a is a real 0-d array: cast it, as real-complex array promotion is the
                # library's choice (JAX's strict mode refuses it).
                a_lam = xp.astype(a, lam.dtype) * lam
                return {**state, "u": xp.fft.irfftn(b_hat / (1 - a_lam), s=u.shape, axes=(0, 1))}

            def operator(v):
                return v - a * interior_laplacian(v)

            x = u[1:-1, 1:-1]
            r = rhs - operator(x)
            stop = (p.cg_tolerance**2) * xp.sum(rhs * rhs)

            def iteration(carry):
                x, r, d, rr = carry
                active = rr > stop  # frozen once converged: no data-dependent loop exit
                ad = operator(d)
                dad = xp.sum(d * ad)
                alpha = xp.where(active, rr / xp.where(dad > 0, dad, xp.ones_like(dad)),
                                 xp.zeros_like(rr))
                x = x + alpha * d
                r = r - alpha * ad
                rr_next = xp.sum(r * r)
                beta = xp.where(active, rr_next / xp.where(rr > 0, rr, xp.ones_like(rr)),
                                xp.zeros_like(rr))
                return x, r, r + beta * d, rr_next

            x, *_ = repeat(p.cg_iterations, iteration, (x, r, r, xp.sum(r * r)))
            # The fixed edges around the new interior, joined (no write a graph tracer splits).
            middle = xp.concat([u[1:-1, :1], x, u[1:-1, -1:]], axis=1)
            return {**state, "u": xp.concat([u[:1], middle, u[-1:]], axis=0)}

        return [Stage("explicit_half", explicit_half), Stage("implicit_solve", implicit_solve)]

    def max_stable_dt(self) -> None:
        return None  # A-stable

    def default_dt(self) -> float:
        return 10 * super().max_stable_dt()
