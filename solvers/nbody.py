"""Gravitational N-body, direct summation with Plummer softening, kick-drift-kick leapfrog.

Stages: ``kick1`` (half kick), ``drift``, ``kick2`` (half kick). Positions ``x`` and velocities
``v`` have dimensions (body, axis); masses are a field too, so a checkpoint holds everything.
One force evaluation per step: ``kick2``'s acceleration is carried to the next ``kick1``
(``Carry``), not stored as a field.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from array_api_compat import array_namespace
from pydantic import Field, ValidationInfo, field_validator, model_validator

from simkit.solver import (
    AbstractSolver,
    Carry,
    Constants,
    Coordinate,
    Diagnostic,
    FieldSpec,
    SolverModel,
    Stage,
)
from solvers import _pairs

#: The acceleration at the end of a step, carried to the next step's first kick (not a field).
ACCELERATION = "acceleration"


class NBodyParams(SolverModel):
    bodies: int = Field(256, ge=2)
    gravity: float = Field(1.0, gt=0, description="gravitational constant G")
    softening: float = Field(0.01, ge=0, description="Plummer softening length")


_BODY_KEYS = ("positions", "velocities", "masses")


class NBodyInitial(SolverModel):
    kind: Literal["plummer", "kepler", "bodies"] = "plummer"
    radius: float = Field(1.0, gt=0, description="Plummer scale radius")
    total_mass: float = Field(1.0, gt=0)
    semi_major_axis: float = Field(1.0, gt=0, description="kepler: a of the relative orbit")
    eccentricity: float = Field(0.5, ge=0, lt=1, description="kepler: e of the relative orbit")
    mass_ratio: float = Field(0.5, gt=0, le=1, description="kepler: m2 / m1")
    positions: list[list[float]] | None = Field(
        None, description="bodies: [x, y] or [x, y, z] of each body (z = 0 when left out)")
    velocities: list[list[float]] | None = Field(
        None, description="bodies: velocity of each body, as many components as positions")
    masses: list[Annotated[float, Field(gt=0)]] | None = Field(
        None, description="bodies: mass of each body")

    @field_validator("positions")
    @classmethod
    def _points(cls, value: list[list[float]] | None) -> list[list[float]] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("expected at least one body, given an empty list")
        dims = sorted({len(point) for point in value})
        if dims not in ([2], [3]):
            raise ValueError(f"expected every body as [x, y] or every body as [x, y, z], given "
                             f"bodies with {' and '.join(map(str, dims))} components")
        return value

    @field_validator("velocities", "masses")
    @classmethod
    def _like_positions(cls, value: list | None, info: ValidationInfo) -> list | None:
        positions = info.data.get("positions")
        if value is None or positions is None:
            return value
        if len(value) != len(positions):
            raise ValueError(f"expected one entry per body ({len(positions)}, as positions), "
                             f"given {len(value)}")
        if info.field_name == "velocities":
            dims = len(positions[0])
            wrong = [i for i, v in enumerate(value) if len(v) != dims]
            if wrong:
                raise ValueError(f"expected {dims} components per body, as positions, given "
                                 f"{len(value[wrong[0]])} for body {wrong[0]}")
        return value

    @model_validator(mode="after")
    def _bodies_with_kind(self) -> NBodyInitial:
        given = [key for key in _BODY_KEYS if getattr(self, key) is not None]
        if self.kind == "bodies" and len(given) < len(_BODY_KEYS):
            missing = [key for key in _BODY_KEYS if key not in given]
            raise ValueError(f"expected {', '.join(_BODY_KEYS)} with kind: bodies, given no "
                             f"{' or '.join(missing)}")
        if self.kind != "bodies" and given:
            raise ValueError(f"expected {', '.join(given)} only with kind: bodies, given kind: "
                             f"{self.kind}")
        other = sorted(self.model_fields_set - {"kind", *_BODY_KEYS})
        if self.kind == "bodies" and other:
            raise ValueError(f"expected only {', '.join(_BODY_KEYS)} with kind: bodies, given "
                             f"{', '.join(other)} too")
        return self


class NBody(AbstractSolver):
    """x'' = G sum_j m_j (x_j - x_i) / (|x_j - x_i|^2 + eps^2)^(3/2)."""

    name = "nbody"
    version = "1"
    description = "gravitational N-body, direct sum, leapfrog KDK (stages: kick1, drift, kick2)"
    Params = NBodyParams
    Initial = NBodyInitial
    time_units = "1"
    differentiable = ("gravity",)
    split_dims = ("body",)  # the Cartesian components of a body stay together

    def __init__(self, params: NBodyParams) -> None:
        self.params = params
        self.constants = Constants(lambda: {"self": np.eye(params.bodies, dtype=bool)})

    def fields(self):
        return [FieldSpec("x", ("body", "axis"), "1", "position"),
                FieldSpec("v", ("body", "axis"), "1", "velocity"),
                FieldSpec("mass", ("body",), "1", "mass")]

    def coordinates(self):
        return [Coordinate("body", np.arange(self.params.bodies), "1", "body index"),
                Coordinate("axis", np.arange(3), "1", "Cartesian axis (x, y, z)")]

    def initial_state(self, initial: NBodyInitial, rng: np.random.Generator):
        n, g = self.params.bodies, self.params.gravity
        if initial.kind == "bodies":
            if len(initial.positions) != n:
                raise ValueError(f"initial.positions: expected {n} bodies (params.bodies), given "
                                 f"{len(initial.positions)}")
            pad = 3 - len(initial.positions[0])  # bodies in a plane move in z = 0
            x = np.pad(np.array(initial.positions, dtype=float), ((0, 0), (0, pad)))
            v = np.pad(np.array(initial.velocities, dtype=float), ((0, 0), (0, pad)))
            return {"x": x, "v": v, "mass": np.array(initial.masses, dtype=float)}
        if initial.kind == "kepler":
            if n != 2:
                raise ValueError(f"initial.kind: expected 2 bodies for kepler, given {n}")
            m1 = initial.total_mass / (1 + initial.mass_ratio)
            m2 = initial.total_mass - m1
            a, e = initial.semi_major_axis, initial.eccentricity
            r = a * (1 - e)
            speed = math.sqrt(g * initial.total_mass * (1 + e) / r)
            rel_x, rel_v = np.array([r, 0.0, 0.0]), np.array([0.0, speed, 0.0])
            frac = np.array([[-m2], [m1]]) / initial.total_mass
            return {"x": frac * rel_x, "v": frac * rel_v, "mass": np.array([m1, m2])}
        # Plummer sphere (Aarseth, Henon & Wielen 1974): radii from the cumulative mass,
        # speeds by rejection from the isotropic distribution function.
        mass = np.full(n, initial.total_mass / n)
        radius = initial.radius / np.sqrt(rng.uniform(1e-3, 1.0, n) ** (-2.0 / 3.0) - 1.0)
        x = radius[:, None] * _unit_vectors(rng, n)
        escape = np.sqrt(2 * g * initial.total_mass) * (radius**2 + initial.radius**2) ** -0.25
        q = np.empty(n)
        filled = np.zeros(n, dtype=bool)
        while not filled.all():
            trial = rng.random(n)
            accept = (~filled) & (0.1 * rng.random(n) < trial**2 * (1 - trial**2) ** 3.5)
            q[accept], filled = trial[accept], filled | accept
        v = (q * escape)[:, None] * _unit_vectors(rng, n)
        x -= np.average(x, axis=0, weights=mass)
        v -= np.average(v, axis=0, weights=mass)
        return {"x": x, "v": v, "mass": mass}

    def initial_params(self, initial: NBodyInitial) -> tuple[str, ...]:
        # kepler and plummer velocities scale as sqrt(G); positions and masses do not move.
        return ("gravity",) if initial.kind in ("kepler", "plummer") else ()

    def initial_at(self, initial: NBodyInitial, state, values):
        if "gravity" not in values or initial.kind not in ("kepler", "plummer"):
            return dict(state)
        scale = array_namespace(state["v"]).sqrt(values["gravity"] / self.params.gravity)
        return {**state, "v": state["v"] * scale}

    def _acceleration(self, x, mass):
        """Direct sum, one (N, N) array per component (faster than an (N, N, 3) array)."""
        xp = array_namespace(x)
        eps2, g = self.params.softening**2, self.params.gravity
        own = self.constants.like(x)["self"]
        d = [x[:, i][None, :] - x[:, i][:, None] for i in range(3)]
        r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2] + eps2
        r2 = xp.where(own, xp.ones_like(r2), r2)  # no 0/0 on the diagonal without softening
        weight = xp.where(own, xp.zeros_like(r2), mass[None, :] / (r2 * xp.sqrt(r2)))
        return xp.stack([g * xp.sum(weight * di, axis=1) for di in d], axis=1)

    def _accelerations(self):
        """The acceleration ``(x, mass) -> (N, 3)``: the Array API specification, and the tiled
        pair sums of module ``_pairs`` per library (no N x N temporaries)."""
        eps2, g = self.params.softening**2, self.params.gravity
        return self._acceleration, {
            "jax": lambda x, m: _pairs.acceleration_jax(x, m, g, eps2),
            "numpy": lambda x, m: _pairs.acceleration_numpy(x, m, g, eps2),
            "torch": lambda x, m: _pairs.acceleration_torch(x, m, g, eps2),
        }

    def stages(self):
        # First same as last: ``kick2`` leaves the acceleration at the new positions in the
        # state (``ACCELERATION``), which the next step's ``kick1`` takes instead of computing
        # it again where a loop of steps passes it on (``carry``): one force evaluation a step.
        def kicks(accel):
            def kick1(state, dt):
                a = state.get(ACCELERATION)
                if a is None:  # a step on its own: computed from the positions, as kick2 does
                    a = accel(state["x"], state["mass"])
                return {**state, "v": state["v"] + (0.5 * dt) * a}

            def kick2(state, dt):
                a = accel(state["x"], state["mass"])
                return {**state, "v": state["v"] + (0.5 * dt) * a, ACCELERATION: a}

            return kick1, kick2

        def drift(state, dt):
            return {**state, "x": state["x"] + dt * state["v"]}

        spec, fast = self._accelerations()
        kick1, kick2 = kicks(spec)
        kernels = {kind: kicks(accel) for kind, accel in fast.items()}
        return [Stage("kick1", kick1, kernels={k: pair[0] for k, pair in kernels.items()}),
                Stage("drift", drift),
                Stage("kick2", kick2, kernels={k: pair[1] for k, pair in kernels.items()})]

    def carry(self) -> Carry:
        spec, fast = self._accelerations()

        def prime(accel):
            return lambda state, dt: {**state, ACCELERATION: accel(state["x"], state["mass"])}

        return Carry((ACCELERATION,), Stage("acceleration", prime(spec), kernels={
            kind: prime(accel) for kind, accel in fast.items()}))

    def diagnostics(self):
        eps2, g = self.params.softening**2, self.params.gravity

        def kinetic(state):
            v, m = state["v"], state["mass"]
            return 0.5 * array_namespace(v).sum(m[:, None] * v * v)

        def potential(state):
            x, m = state["x"], state["mass"]
            xp = array_namespace(x)
            own = self.constants.like(x)["self"]
            d = [x[:, i][None, :] - x[:, i][:, None] for i in range(3)]
            r = xp.sqrt(xp.where(own, xp.ones_like(d[0]), d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
                                 + eps2))
            pair = xp.where(own, xp.zeros_like(r), m[None, :] * m[:, None] / r)
            return -0.5 * g * xp.sum(pair)

        def momentum(axis):
            def fn(state):
                return array_namespace(state["v"]).sum(state["mass"] * state["v"][:, axis])
            return fn

        def angular_momentum_z(state):
            x, v, m = state["x"], state["v"], state["mass"]
            return array_namespace(x).sum(m * (x[:, 0] * v[:, 1] - x[:, 1] * v[:, 0]))

        return [
            Diagnostic("kinetic", kinetic, "1", "kinetic energy"),
            Diagnostic("potential", potential, "1", "softened potential energy"),
            Diagnostic("energy", lambda s: kinetic(s) + potential(s), "1", "total energy"),
            *(Diagnostic(f"momentum_{c}", momentum(i), "1", f"total momentum along {c}")
              for i, c in enumerate("xyz")),
            Diagnostic("angular_momentum_z", angular_momentum_z, "1", "total L_z"),
        ]

    def max_stable_dt(self) -> None:
        return None

    def default_dt(self) -> float:
        return 1e-3


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    z = rng.uniform(-1, 1, n)
    phi = rng.uniform(0, 2 * math.pi, n)
    s = np.sqrt(1 - z * z)
    return np.stack([s * np.cos(phi), s * np.sin(phi), z], axis=1)
