"""Heat and Lorenz against analytic solutions; convergence orders from regression slopes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import heat_scenario, lorenz_scenario


def _slope(h, err):
    return np.polyfit(np.log(h), np.log(err), 1)[0]


def _heat_mode_error(n: int, boundary: str, backend: str = "numpy") -> float:
    """Max error of a decaying Fourier mode against exp(-D |k|^2 t) on an n x n grid."""
    length = 1.0
    spacing = length / n if boundary == "periodic" else length / (n - 1)
    diffusivity, until = 1.0, 0.01
    result = simkit.run(heat_scenario(
        backend=backend,
        params={"diffusivity": diffusivity, "shape": [n, n], "spacing": spacing,
                "boundary": boundary},
        initial={"kind": "mode", "mode": [1, 1], "amplitude": 1.0},
        steps=None, until=until, dt=0.2 * spacing**2 / diffusivity, outputs={},
        output=f"mode_{boundary}_{n}.nc"))
    k = (2 if boundary == "periodic" else 1) * math.pi / length
    x = np.arange(n) * spacing
    exact = np.outer(np.sin(k * x), np.sin(k * x)) * math.exp(-diffusivity * 2 * k**2 * until)
    assert result.time == until
    return float(np.abs(result.state["u"] - exact).max())


@pytest.mark.parametrize("boundary", ["periodic", "fixed"])
def test_heat_matches_decaying_mode_with_second_order_convergence(in_tmp, boundary):
    sizes = np.array([12, 24, 48, 96])
    errors = np.array([_heat_mode_error(n, boundary) for n in sizes])
    order = _slope(1.0 / sizes, errors)
    assert 1.9 < order < 2.1, (order, errors)
    assert errors[-1] < 1e-3


def test_heat_conserves_heat_on_a_periodic_plate(in_tmp):
    result = simkit.run(heat_scenario(steps=500))
    with xr.open_dataset(result.path, group="diag") as diag:
        heat = diag.heat.values
        energy = diag.energy.values
    np.testing.assert_allclose(heat, heat[0], rtol=1e-12, atol=1e-12 * np.abs(heat).max())
    assert np.all(np.diff(energy) < 0)  # diffusion only ever dissipates


def test_heat_fixed_boundary_holds_the_edge_value(in_tmp):
    result = simkit.run(heat_scenario(params={"boundary": "fixed", "boundary_value": 2.5},
                                      initial={"kind": "uniform", "amplitude": 0.0}, steps=50))
    u = result.state["u"]
    for edge in (u[0], u[-1], u[:, 0], u[:, -1]):
        np.testing.assert_array_equal(edge, 2.5)
    assert u[1:-1, 1:-1].min() > 0.0 and u.max() <= 2.5


def _lorenz_final(dt: float, until: float = 0.5) -> np.ndarray:
    steps = round(until / dt)
    result = simkit.run(lorenz_scenario(steps=steps, dt=dt, outputs={}, params={},
                                        initial={}, output=f"lorenz_{steps}.nc"))
    return np.stack([result.state[c] for c in "xyz"])


def test_lorenz_rk4_is_fourth_order(in_tmp):
    reference = _lorenz_final(2e-5)
    dts = np.array([0.01, 0.005, 0.0025, 0.00125])
    errors = np.array([np.abs(_lorenz_final(dt) - reference).max() for dt in dts])
    order = _slope(dts, errors)
    assert 3.8 < order < 4.2, (order, errors)


def test_lorenz_fixed_points_stay_fixed(in_tmp):
    # C+ = (sqrt(beta (rho - 1)), same, rho - 1) is an equilibrium of Lorenz-63.
    beta, rho = 8.0 / 3.0, 28.0
    c = math.sqrt(beta * (rho - 1))
    result = simkit.run(lorenz_scenario(initial={"x": c, "y": c, "z": rho - 1.0},
                                        params={"trajectories": 1}, steps=100, outputs={}))
    np.testing.assert_allclose([result.state[v][0] for v in "xyz"], [c, c, rho - 1], rtol=1e-12)
