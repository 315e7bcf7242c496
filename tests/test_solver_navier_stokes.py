"""2D Navier-Stokes: Taylor-Green decay against exp(-2 nu k^2 t); decaying turbulence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

import simkit

TOLERANCE = {"float64": 1e-8, "float32": 1e-4}  # the solver library's targets


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("k", [1, 3])
def test_taylor_green_vortex_decays_exactly(backend, in_tmp, dtype, k):
    nu, until, n = 0.01, 2.0, 32
    result = simkit.run({"solver": "navier_stokes2d", "backend": backend, "dtype": dtype,
                         "params": {"viscosity": nu, "size": n},
                         "initial": {"kind": "taylor_green", "wavenumber": k},
                         "until": until, "dt": 0.01, "outputs": {}, "output": "tg.nc"})
    grid = np.arange(n) * 2 * math.pi / n
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    # Taylor-Green: the nonlinear term vanishes, omega = cos(kx) cos(ky) exp(-2 nu k^2 t).
    exact = np.cos(k * xx) * np.cos(k * yy) * math.exp(-2 * nu * k**2 * until)
    error = np.abs(result.state["omega"] - exact).max() / np.abs(exact).max()
    assert error < TOLERANCE[dtype], error


def test_decaying_turbulence_energy_never_grows(backend, in_tmp):
    result = simkit.run({"solver": "navier_stokes2d", "backend": backend,
                         "params": {"viscosity": 1e-3, "size": 64}, "steps": 400, "seed": 7,
                         "outputs": {"e": {"every": 5, "diagnostics": ["energy", "enstrophy"]}},
                         "output": "turb.nc"})
    with xr.open_dataset(result.path, group="e") as e:
        energy, enstrophy = e.energy.values, e.enstrophy.values
    assert np.all(np.diff(energy) <= 1e-12 * energy[0])
    assert energy[-1] < 0.95 * energy[0] and enstrophy[-1] < enstrophy[0]
