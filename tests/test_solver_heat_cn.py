"""Crank-Nicolson heat: second order in time (regression slope), stable far past the explicit
limit, FFT (periodic) and conjugate-gradient (fixed edges) solves agree with the exact modes."""

from __future__ import annotations

import math

import numpy as np
import pytest

import simkit


def _mode_error(backend, boundary, n, dt, until=0.02):
    length = 1.0
    h = length / n if boundary == "periodic" else length / (n - 1)
    result = simkit.run({"solver": "heat2d_cn", "backend": backend,
                         "params": {"shape": [n, n], "spacing": h, "boundary": boundary,
                                    "cg_iterations": 200},
                         "initial": {"kind": "mode", "mode": [1, 1]}, "until": until, "dt": dt,
                         "outputs": {}, "output": f"cn_{dt}.nc"})
    k = (2 if boundary == "periodic" else 1) * math.pi / length
    # The exact solution of the space-discrete problem: only the time error remains.
    lam = -(4 / h**2) * 2 * math.sin(k * h / 2) ** 2
    x = np.arange(n) * h
    exact = np.outer(np.sin(k * x), np.sin(k * x)) * math.exp(lam * until)
    return float(np.abs(result.state["u"] - exact).max()), h


@pytest.mark.parametrize("boundary", ["periodic", "fixed"])
def test_crank_nicolson_is_second_order_in_time(backend, in_tmp, boundary):
    dts = np.array([0.02 / 4, 0.02 / 8, 0.02 / 16, 0.02 / 32])
    errors = np.array([_mode_error(backend, boundary, 32, dt)[0] for dt in dts])
    order = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert 1.9 < order < 2.1, (order, errors)


@pytest.mark.parametrize("boundary", ["periodic", "fixed"])
def test_stable_at_a_hundred_times_the_explicit_limit(in_tmp, boundary):
    n, h = 32, 1.0
    explicit_limit = h * h / 4
    result = simkit.run({"solver": "heat2d_cn", "params": {"shape": [n, n], "spacing": h,
                                                           "boundary": boundary},
                         "initial": {"kind": "noise"}, "dt": 100 * explicit_limit, "steps": 200,
                         "outputs": {"d": {"every": 1, "diagnostics": ["energy"]}},
                         "output": "stiff.nc"})
    import xarray as xr

    with xr.open_dataset(result.path, group="d") as d:
        energy = d.energy.values
    assert np.all(np.isfinite(result.state["u"]))
    assert np.all(np.diff(energy) <= 1e-12 * energy[0])  # CN never amplifies a mode
    assert energy[-1] < 1e-2 * energy[0]  # stiff modes decay slowly under CN (|g| -> 1)
