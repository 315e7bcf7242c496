"""2D incompressible Navier-Stokes in vorticity form, pseudo-spectral on a periodic box.

The nonlinear term is dealiased with the 2/3 rule; time stepping is classic RK4 whose stages
``k1`` .. ``k4`` are the solver's stages. FFTs go through the Array API ``fft`` namespace.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from array_api_compat import array_namespace
from pydantic import Field

from simkit.solver import (
    AbstractSolver,
    Constants,
    Coordinate,
    Diagnostic,
    FieldSpec,
    SolverModel,
    Stage,
)


class NavierStokes2DParams(SolverModel):
    viscosity: float = Field(1e-3, gt=0, description="kinematic viscosity nu")
    size: int = Field(128, ge=8, description="grid points per side")
    length: float = Field(2 * math.pi, gt=0, description="side of the periodic box")
    dealias: bool = Field(True, description="2/3-rule dealiasing of the nonlinear term")
    cfl: float = Field(0.5, gt=0, le=1.0, description="target CFL number of the default dt")
    velocity_scale: float = Field(1.0, gt=0, description="expected max |u| for the default dt")


class NavierStokes2DInitial(SolverModel):
    kind: Literal["taylor_green", "turbulence"] = "turbulence"
    wavenumber: int = Field(1, ge=1, description="Taylor-Green wave number k")
    amplitude: float = Field(1.0, description="peak vorticity (Taylor-Green) or rms velocity")
    peak: float = Field(4.0, gt=0, description="wave number of the energy peak (turbulence)")


class NavierStokes2D(AbstractSolver):
    """omega_t + u . grad omega = nu lap omega, with u = (psi_y, -psi_x) and lap psi = -omega."""

    name = "navier_stokes2d"
    version = "1"
    description = "2D Navier-Stokes, vorticity, pseudo-spectral RK4 (stages: k1, k2, k3, k4)"
    Params = NavierStokes2DParams
    Initial = NavierStokes2DInitial
    time_units = "s"
    differentiable = ("viscosity",)

    def __init__(self, params: NavierStokes2DParams) -> None:
        self.params = params
        self.constants = Constants(self._build_constants)

    def _build_constants(self) -> dict[str, np.ndarray]:
        n, length = self.params.size, self.params.length
        ky = np.fft.fftfreq(n, d=length / n) * 2 * math.pi
        kx = np.fft.rfftfreq(n, d=length / n) * 2 * math.pi
        kyy, kxx = np.meshgrid(ky, kx, indexing="ij")
        k2 = kxx**2 + kyy**2
        inv_k2 = np.where(k2 > 0, 1.0 / np.where(k2 > 0, k2, 1.0), 0.0)
        cutoff = (2.0 / 3.0) * np.abs(kx).max() if self.params.dealias else np.inf
        keep = (np.abs(kxx) < cutoff) & (np.abs(kyy) < cutoff)
        return {"kx": kxx, "ky": kyy, "k2": k2, "inv_k2": inv_k2, "mask": keep.astype(float)}

    def fields(self):
        return [FieldSpec("omega", ("y", "x"), "s-1", "vorticity")]

    def coordinates(self):
        n, length = self.params.size, self.params.length
        grid = np.arange(n) * length / n
        return [Coordinate("y", grid, "m", "y position"), Coordinate("x", grid, "m", "x position")]

    def initial_state(self, initial: NavierStokes2DInitial, rng: np.random.Generator):
        n, length = self.params.size, self.params.length
        grid = np.arange(n) * length / n
        yy, xx = np.meshgrid(grid, grid, indexing="ij")
        if initial.kind == "taylor_green":
            k = 2 * math.pi * initial.wavenumber / length
            return {"omega": initial.amplitude * np.cos(k * xx) * np.cos(k * yy)}
        c = self._build_constants()
        k = np.sqrt(c["k2"])
        spectrum = k**4 * np.exp(-2 * (k / initial.peak) ** 2)  # energy shell spectrum shape
        phase = np.exp(2j * math.pi * rng.random(k.shape))
        omega_hat = np.sqrt(spectrum * k) * phase
        omega = np.fft.irfftn(omega_hat, s=(n, n), axes=(0, 1))
        u, v = self._velocity(omega)
        return {"omega": omega * initial.amplitude / float(np.sqrt(np.mean(u * u + v * v)))}

    def _velocity_from_hat(self, omega_hat, shape, c):
        """u = psi_y, v = -psi_x from the spectral vorticity (constants ``c`` like it)."""
        xp = array_namespace(omega_hat)
        psi_hat = omega_hat * c["inv_k2"]
        u = xp.fft.irfftn(1j * c["ky"] * psi_hat, s=shape, axes=(0, 1))
        v = xp.fft.irfftn(-1j * c["kx"] * psi_hat, s=shape, axes=(0, 1))
        return u, v

    def _rhs(self, omega_hat, shape):
        """d omega_hat / dt: dealiased -u . grad omega, minus nu k^2 omega_hat."""
        xp = array_namespace(omega_hat)
        c = self.constants.like(omega_hat)
        u, v = self._velocity_from_hat(omega_hat, shape, c)
        wx = xp.fft.irfftn(1j * c["kx"] * omega_hat, s=shape, axes=(0, 1))
        wy = xp.fft.irfftn(1j * c["ky"] * omega_hat, s=shape, axes=(0, 1))
        advection = xp.fft.rfftn(u * wx + v * wy) * c["mask"]
        return -advection - self.params.viscosity * c["k2"] * omega_hat

    def stages(self):
        rhs = self._rhs

        def k1(state, dt):
            omega = state["omega"]
            xp = array_namespace(omega)
            w = xp.fft.rfftn(omega)
            return {**state, "w": w, "k1": rhs(w, omega.shape)}

        def complex_like(value, w):
            # dt is a real 0-d array: real times complex arrays is mixed-kind promotion, which
            # the Array API leaves to each library (JAX's strict mode refuses it), so cast first.
            return array_namespace(w).astype(value, w.dtype)

        def k2(state, dt):
            w = state["w"]
            return {**state, "k2": rhs(w + complex_like(0.5 * dt, w) * state["k1"],
                                       state["omega"].shape)}

        def k3(state, dt):
            w = state["w"]
            return {**state, "k3": rhs(w + complex_like(0.5 * dt, w) * state["k2"],
                                       state["omega"].shape)}

        def k4(state, dt):
            shape = state["omega"].shape
            w, a, b, c = state["w"], state["k1"], state["k2"], state["k3"]
            d = rhs(w + complex_like(dt, w) * c, shape)
            xp = array_namespace(w)
            w_new = w + complex_like(dt / 6.0, w) * (a + 2 * b + 2 * c + d)
            return {**state, "omega": xp.fft.irfftn(w_new, s=shape, axes=(0, 1))}

        return [Stage("k1", k1), Stage("k2", k2), Stage("k3", k3), Stage("k4", k4)]

    def _velocity(self, omega):
        xp = array_namespace(omega)
        omega_hat = xp.fft.rfftn(omega)
        return self._velocity_from_hat(omega_hat, omega.shape, self.constants.like(omega_hat))

    def diagnostics(self):
        area = (self.params.length / self.params.size) ** 2

        def energy(state):
            u, v = self._velocity(state["omega"])
            return 0.5 * area * array_namespace(u).sum(u * u + v * v)

        def enstrophy(state):
            w = state["omega"]
            return 0.5 * area * array_namespace(w).sum(w * w)

        def max_velocity(state):
            u, v = self._velocity(state["omega"])
            xp = array_namespace(u)
            return xp.sqrt(xp.max(u * u + v * v))

        return [Diagnostic("energy", energy, "m4 s-2", "kinetic energy (unit density)"),
                Diagnostic("enstrophy", enstrophy, "m2 s-2", "half the integral of omega^2"),
                Diagnostic("max_velocity", max_velocity, "m s-1", "largest speed")]

    def max_stable_dt(self) -> None:
        return None  # depends on the flow: the default dt follows a CFL estimate

    def default_dt(self) -> float:
        h = self.params.length / self.params.size
        advective = self.params.cfl * h / self.params.velocity_scale
        k_max = math.pi / h
        diffusive = 2.5 / (self.params.viscosity * k_max**2)  # RK4 stability on the real axis
        return min(advective, diffusive)
