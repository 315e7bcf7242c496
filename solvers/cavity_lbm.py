"""Lid-driven square cavity, lattice Boltzmann D2Q9 with BGK collisions.

Stages: ``collide`` (BGK relaxation towards equilibrium), ``stream`` (populations move one link),
``boundaries`` (half-way bounce-back on the walls, Ladd's momentum term on the moving lid).
Lattice units: the cavity is ``size`` cells wide, the lid moves at ``lid_speed`` cells per step.

Steady state: the lattice carries a weakly damped period-two oscillation (the velocity alternates
between two values from one step to the next, by up to 3e-4 of the lid speed at Re = 1000 on
64^2), so a one-step change never settles at high Re. The ``settling`` diagnostic compares the
velocity two steps apart, relative to the flow's own size, and falls to round-off at every Re.
"""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace
from pydantic import Field

from simkit.solver import (
    AbstractSolver,
    Constants,
    Coordinate,
    Diagnostic,
    FieldSpec,
    ScratchPool,
    SolverModel,
    Stage,
)
from solvers import _d2q9, _stencil

# D2Q9: rest, 4 axis, 4 diagonal directions; weights; opposite directions.
C = np.array([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1], [1, 1], [-1, 1], [-1, -1], [1, -1]])
W = np.array([4 / 9] + [1 / 9] * 4 + [1 / 36] * 4)
OPPOSITE = np.array([0, 3, 4, 1, 2, 7, 8, 5, 6])


class CavityParams(SolverModel):
    reynolds: float = Field(100.0, gt=0, description="Re = U N / nu")
    size: int = Field(64, ge=8, description="cells per side")
    lid_speed: float = Field(0.1, gt=0, le=0.3, description="lid speed (lattice units)")


class CavityInitial(SolverModel):
    density: float = Field(1.0, gt=0)


class Cavity(AbstractSolver):
    """Incompressible flow in a unit square driven by its top wall, at Reynolds number Re."""

    name = "cavity_lbm"
    version = "2"
    description = "lid-driven cavity, lattice Boltzmann D2Q9 (stages: collide, stream, boundaries)"
    Params = CavityParams
    Initial = CavityInitial
    time_units = "1"

    def __init__(self, params: CavityParams) -> None:
        self.params = params
        viscosity = params.lid_speed * params.size / params.reynolds
        self.tau = 3 * viscosity + 0.5
        self.constants = Constants(self._build_constants)

    def _build_constants(self) -> dict[str, np.ndarray]:
        n, lid = self.params.size, self.params.lid_speed
        y, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        wall = np.zeros((9, n, n), dtype=bool)
        moving = np.zeros((9, n, n))
        for i, (cx, cy) in enumerate(C):
            sx, sy = x - cx, y - cy  # where population i comes from
            wall[i] = (sx < 0) | (sx >= n) | (sy < 0) | (sy >= n)
            # Ladd: a population bounced off the lid gains 2 w rho (c . u_lid) / cs^2.
            moving[i] = np.where(sy >= n, 6 * W[i] * cx * lid, 0.0)
        return {"cx": C[:, 0].astype(float)[:, None, None], "cy": C[:, 1].astype(float)[:, None, None],
                "w": W[:, None, None], "wall": wall, "moving": moving}

    def fields(self):
        return [FieldSpec("f", ("q", "y", "x"), "1", "D2Q9 populations"),
                FieldSpec("ux", ("y", "x"), "1", "x velocity at the start of the step"),
                FieldSpec("uy", ("y", "x"), "1", "y velocity at the start of the step"),
                FieldSpec("ux_prev", ("y", "x"), "1", "x velocity at the start of the step before"),
                FieldSpec("uy_prev", ("y", "x"), "1", "y velocity at the start of the step before")]

    def coordinates(self):
        n = self.params.size
        centers = (np.arange(n) + 0.5) / n
        return [Coordinate("q", np.arange(9), "1", "D2Q9 direction"),
                Coordinate("y", centers, "1", "height over cavity side"),
                Coordinate("x", centers, "1", "distance over cavity side")]

    def initial_state(self, initial: CavityInitial, rng: np.random.Generator):
        n = self.params.size
        f = initial.density * np.broadcast_to(W[:, None, None], (9, n, n)).copy()
        rest = np.zeros((n, n))
        return {"f": f, "ux": rest, "uy": rest.copy(), "ux_prev": rest.copy(),
                "uy_prev": rest.copy()}

    def _moments(self, f):
        xp = array_namespace(f)
        c = self.constants.like(f)
        rho = xp.sum(f, axis=0)
        ux = xp.sum(f * c["cx"], axis=0) / rho
        uy = xp.sum(f * c["cy"], axis=0) / rho
        return rho, ux, uy

    def stages(self):
        tau = self.tau
        # Python ints, taken here: a compiled graph (torch.compile) cannot hold NumPy arrays.
        shifts = [(int(cy), int(cx)) for cx, cy in C]
        opposite = [int(j) for j in OPPOSITE]

        def collide(state, dt):
            f = state["f"]
            c = self.constants.like(f)
            rho, ux, uy = self._moments(f)
            cu = c["cx"] * ux + c["cy"] * uy
            feq = c["w"] * rho * (1 + 3 * cu + 4.5 * cu * cu - 1.5 * (ux * ux + uy * uy))
            return {**state, "post": f - (f - feq) / tau, "rho": rho, "ux": ux, "uy": uy,
                    "ux_prev": state["ux"], "uy_prev": state["uy"]}

        def stream(state, dt):
            post = state["post"]
            xp = array_namespace(post)
            moved = [xp.roll(post[i], shift, axis=(0, 1)) for i, shift in enumerate(shifts)]
            return {**state, "streamed": xp.stack(moved, axis=0)}

        def boundaries(state, dt):
            post, streamed = state["post"], state["streamed"]
            xp = array_namespace(post)
            c = self.constants.like(post)
            bounced = xp.stack([post[j] for j in opposite], axis=0) + c["moving"] * state["rho"]
            return {**state, "f": xp.where(c["wall"], bounced, streamed)}

        # Kernels, per direction (module ``_d2q9``). NumPy and torch: in place into arrays of one
        # pool. JAX: in the forms XLA fuses, walls found from the cell's row and column. Lid
        # terms as ``_build_constants`` makes ``moving``.
        # A step takes 6 planes; the state it was given holds 4 (ux, uy and the two before them)
        # and a state kept from earlier (a capture, the last good one) 4 more.
        pool = ScratchPool(size=16)
        lid_terms = [6 * float(W[i]) * int(cx) * self.params.lid_speed if cy == -1 else 0.0
                     for i, (cx, cy) in enumerate(C)]

        def collide_inplace(state, dt):
            post, rho, ux, uy = _d2q9.collide_inplace(state["f"], C, W, tau, pool)
            return {**state, "post": post, "rho": rho, "ux": ux, "uy": uy,
                    "ux_prev": state["ux"], "uy_prev": state["uy"]}

        def stream_inplace(state, dt):
            return {**state, "streamed": _d2q9.stream_inplace(state["post"], shifts, pool)}

        def boundaries_inplace(state, dt):
            return {**state, "f": _d2q9.bounce_inplace(state["post"], state["streamed"],
                                                       state["rho"], C, opposite, lid_terms,
                                                       pool)}

        def collide_jax(state, dt):
            post, rho, ux, uy = _d2q9.collide_jax(state["f"], C, W, tau)
            return {**state, "post": post, "rho": rho, "ux": ux, "uy": uy,
                    "ux_prev": state["ux"], "uy_prev": state["uy"]}

        def stream_jax(state, dt):
            return {**state, "streamed": _d2q9.stream_jax(state["post"], shifts)}

        def boundaries_jax(state, dt):
            return {**state, "f": _d2q9.bounce_jax(state["post"], state["streamed"],
                                                   state["rho"], C, opposite, lid_terms)}

        def kernels(inplace, jax, specification):
            return {"numpy": inplace, "jax": jax,
                    "torch": _stencil.eager_torch(inplace, specification)}

        return [Stage("collide", collide, kernels=kernels(collide_inplace, collide_jax, collide)),
                Stage("stream", stream, kernels=kernels(stream_inplace, stream_jax, stream)),
                Stage("boundaries", boundaries,
                      kernels=kernels(boundaries_inplace, boundaries_jax, boundaries))]

    def diagnostics(self):
        lid = self.params.lid_speed

        def change(state):
            _, ux, uy = self._moments(state["f"])
            xp = array_namespace(ux)
            return xp.max(xp.abs(ux - state["ux"]) + xp.abs(uy - state["uy"])) / lid

        def settling(state):
            # Two steps apart, the lattice's period-two oscillation cancels (module docstring).
            _, ux, uy = self._moments(state["f"])
            xp = array_namespace(ux)
            dx, dy = ux - state["ux_prev"], uy - state["uy_prev"]
            moved = xp.sqrt(xp.sum(dx * dx + dy * dy))
            size = xp.sqrt(xp.sum(ux * ux + uy * uy))
            at_rest = size == 0
            return xp.where(at_rest, xp.ones_like(size),
                            moved / (2 * xp.where(at_rest, xp.ones_like(size), size)))

        def mass(state):
            f = state["f"]
            return array_namespace(f).sum(f)

        def kinetic(state):
            rho, ux, uy = self._moments(state["f"])
            return 0.5 * array_namespace(rho).sum(rho * (ux * ux + uy * uy))

        return [Diagnostic("change", change, "1", "largest velocity change of a step / lid speed"),
                Diagnostic("settling", settling, "1", "per-step change of the velocity field "
                           "over two steps, relative to its L2 norm (1 at rest)"),
                Diagnostic("mass", mass, "1", "total mass (conserved)"),
                Diagnostic("kinetic", kinetic, "1", "kinetic energy")]

    def max_stable_dt(self) -> float:
        return 1.0

    def default_dt(self) -> float:
        return 1.0  # lattice units: one step is one time unit
