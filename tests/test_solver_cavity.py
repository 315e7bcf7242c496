"""Lid-driven cavity (LBM D2Q9) at Re = 100 against Ghia, Ghia & Shin, J. Comput. Phys. 48
(1982), Tables I and II; the steady-state stopping rule; mass conservation on every backend."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import require_backend
from solvers.cavity_lbm import C

# Ghia et al. (1982), Re = 100: u on the vertical centerline, v on the horizontal centerline.
GHIA_Y = [1.0, 0.9766, 0.9688, 0.9609, 0.9531, 0.8516, 0.7344, 0.6172, 0.5, 0.4531, 0.2813,
          0.1719, 0.1016, 0.0703, 0.0625, 0.0547, 0.0]
GHIA_U = [1.0, 0.84123, 0.78871, 0.73722, 0.68717, 0.23151, 0.00332, -0.13641, -0.20581,
          -0.21090, -0.15662, -0.10150, -0.06434, -0.04775, -0.04192, -0.03717, 0.0]
GHIA_X = [1.0, 0.9688, 0.9609, 0.9531, 0.9453, 0.9063, 0.8594, 0.8047, 0.5, 0.2344, 0.2266,
          0.1563, 0.0938, 0.0781, 0.0703, 0.0625, 0.0]
GHIA_V = [0.0, -0.05906, -0.07391, -0.08864, -0.10313, -0.16914, -0.22445, -0.24533, 0.05454,
          0.17527, 0.17507, 0.16077, 0.12317, 0.10890, 0.10091, 0.09233, 0.0]


def _velocity(f, lid):
    rho = f.sum(axis=0)
    ux = np.tensordot(C[:, 0], f, axes=1) / rho / lid
    uy = np.tensordot(C[:, 1], f, axes=1) / rho / lid
    return ux, uy


@pytest.mark.slow
def test_re100_centerlines_match_ghia_within_two_percent_of_lid_speed(in_tmp):
    require_backend("jax")
    n, lid = 64, 0.1
    result = simkit.run({"solver": "cavity_lbm", "backend": "jax",
                         "params": {"reynolds": 100.0, "size": n, "lid_speed": lid},
                         "steps": 60_000, "stop_when": {"diagnostic": "settling", "below": 1e-8},
                         "outputs": {"d": {"every": 500, "diagnostics": ["settling"],
                                           "last": True}},
                         "output": "cavity.nc"})
    ux, uy = _velocity(result.state["f"], lid)
    centers = (np.arange(n) + 0.5) / n
    walls = np.concatenate([[0.0], centers, [1.0]])
    u_line = np.concatenate([[0.0], 0.5 * (ux[:, n // 2 - 1] + ux[:, n // 2]), [1.0]])
    v_line = np.concatenate([[0.0], 0.5 * (uy[n // 2 - 1, :] + uy[n // 2, :]), [0.0]])
    u_dev = np.abs(np.interp(GHIA_Y, walls, u_line) - GHIA_U).max()
    v_dev = np.abs(np.interp(GHIA_X, walls, v_line) - GHIA_V).max()
    assert u_dev < 0.02 and v_dev < 0.02, (u_dev, v_dev)  # measured: ~0.006 and ~0.003
    # The stopping rule ended the run at steady state, before the step limit.
    with xr.open_dataset(result.path, group="d") as d:
        settling = d.settling.values
    assert result.step < 60_000 and settling[-1] < 1e-8 <= settling[-2]


def test_stop_rule_ends_the_run_at_the_first_crossing(backend, in_tmp):
    result = simkit.run({"solver": "fixture_solvers:CountingDecay", "backend": backend,
                         "steps": 100, "dt": 1.0,
                         "stop_when": {"diagnostic": "total", "below": 10.0},
                         "outputs": {"end": {"last": True, "diagnostics": ["total"]}},
                         "output": "stop.nc"})
    assert result.step == 13  # first k with 36 * 0.9**k < 10
    with xr.open_dataset(result.path, group="end") as end:
        assert list(end.step.values) == [13]


def test_cavity_conserves_mass_and_agrees_across_backends(backend, in_tmp):
    scenario = {"solver": "cavity_lbm", "params": {"size": 24}, "steps": 300,
                "outputs": {"d": {"every": 100, "diagnostics": ["mass"]}}}
    ref = simkit.run({**scenario, "output": "ref.nc"})
    got = simkit.run({**scenario, "backend": backend, "output": "got.nc"})
    with xr.open_dataset(got.path, group="d") as d:
        np.testing.assert_allclose(d.mass.values, 24 * 24, rtol=1e-12)
    np.testing.assert_allclose(got.state["f"], ref.state["f"], rtol=1e-12, atol=1e-15)
