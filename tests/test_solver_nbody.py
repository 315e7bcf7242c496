"""N-body: Kepler orbit period, energy and momentum conservation, N = 4096 on JAX."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import require_backend


def test_kepler_orbit_returns_after_one_analytic_period(backend, in_tmp):
    # Two bodies, a = 1, e = 0.5, G M = 1: period T = 2 pi sqrt(a^3 / (G M)) (Kepler's third law).
    period = 2 * math.pi
    result = simkit.run({"solver": "nbody", "backend": backend,
                         "params": {"bodies": 2, "softening": 0.0},
                         "initial": {"kind": "kepler", "eccentricity": 0.5},
                         "until": period, "dt": period / 8000,
                         "outputs": {"start": {"first": True, "fields": ["x"]}},
                         "output": "kepler.nc"})
    with xr.open_dataset(result.path, group="start") as start:
        x0 = start.x.values[0]
    separation0, separation = x0[1] - x0[0], result.state["x"][1] - result.state["x"][0]
    assert result.time == period
    assert np.abs(separation - separation0).max() < 1e-4  # of the semi-major axis, a = 1


def test_plummer_energy_bounded_and_momentum_conserved(backend, in_tmp):
    result = simkit.run({"solver": "nbody", "backend": backend,
                         "params": {"bodies": 64, "softening": 0.05}, "steps": 10_000, "dt": 1e-3,
                         "outputs": {"e": {"every": 100, "diagnostics": [
                             "energy", "momentum_x", "momentum_y", "momentum_z",
                             "angular_momentum_z"]}},
                         "output": "plummer.nc"})
    with xr.open_dataset(result.path, group="e") as e:
        energy = e.energy.values
        momenta = np.stack([e[f"momentum_{c}"].values for c in "xyz"])
        lz = e.angular_momentum_z.values
    assert np.abs(energy / energy[0] - 1).max() < 1e-4
    scale = np.sum(result.state["mass"][:, None] * np.abs(result.state["v"]))
    assert np.abs(momenta).max() < 1e-13 * scale  # round-off: the pair forces cancel exactly
    assert np.abs(lz - lz[0]).max() < 1e-12 * scale


@pytest.mark.slow
def test_scales_to_4096_bodies_on_jax(in_tmp):
    require_backend("jax")
    result = simkit.run({"solver": "nbody", "backend": "jax", "params": {"bodies": 4096},
                         "steps": 3, "outputs": {"e": {"every": 3,
                                                       "diagnostics": ["momentum_x", "energy"]}},
                         "output": "big.nc"})
    with xr.open_dataset(result.path, group="e") as e:
        assert np.all(np.isfinite(e.energy.values))
        assert abs(e.momentum_x.values).max() < 1e-12
    assert result.state["x"].shape == (4096, 3)
