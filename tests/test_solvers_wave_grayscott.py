"""Wave equation (energy, discrete dispersion) and Gray-Scott (uniform state, pattern growth)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import require_backend
from solvers.wave2d import Wave2D, Wave2DParams


def _stream(path, name):
    with xr.open_dataset(path, group=name) as ds:
        return ds.load()


def test_wave_energy_conserved_over_ten_thousand_steps(backend, in_tmp):
    result = simkit.run({"solver": "wave2d", "backend": backend, "params": {"shape": [64, 64]},
                         "initial": {"width": 10.0}, "steps": 10_000,
                         "outputs": {"e": {"every": 10, "diagnostics": ["energy"]}},
                         "output": "w.nc"})
    energy = _stream(result.path, "e").energy.values
    drift = np.abs(energy / energy[0] - 1)
    assert drift.max() < 1e-3, drift.max()  # target of the solver library: 1e-3 over 1e4 steps
    # Velocity Verlet's error is a bounded oscillation, not a drift: no secular trend.
    trend = np.polyfit(np.arange(len(energy)) * 10, energy / energy[0] - 1, 1)[0]
    assert abs(trend) * 10_000 < 1e-4, trend


def test_wave_verlet_conserves_its_shadow_energy_to_round_off(in_tmp):
    # For u'' = -A u, velocity Verlet conserves v.v + u.A u - dt^2/4 |A u|^2 exactly.
    dt, h, c = 0.5, 1.0, 1.0
    result = simkit.run({"solver": "wave2d", "params": {"shape": [32, 32]}, "dt": dt,
                         "initial": {"width": 3.0}, "steps": 2000,
                         "outputs": {"s": {"every": 500}}, "output": "s.nc"})
    s = _stream(result.path, "s")

    def shadow(u, v):
        lap = (np.roll(u, 1, 0) + np.roll(u, -1, 0) + np.roll(u, 1, 1) + np.roll(u, -1, 1)
               - 4 * u) * c**2 / h**2
        grad = (np.roll(u, -1, 0) - u) ** 2 + (np.roll(u, -1, 1) - u) ** 2
        return np.sum(v * v) + c**2 * np.sum(grad) / h**2 - dt**2 / 4 * np.sum(lap * lap)

    values = [shadow(s.u.values[i], s.v.values[i]) for i in range(s.sizes["step"])]
    np.testing.assert_allclose(values, values[0], rtol=1e-12)


def test_wave_standing_mode_follows_the_discrete_dispersion_relation(backend, in_tmp):
    mode, shape, dt = (1, 2), [32, 32], 0.4
    result = simkit.run({"solver": "wave2d", "backend": backend, "params": {"shape": shape},
                         "dt": dt, "initial": {"kind": "mode", "mode": list(mode)},
                         "steps": 400, "outputs": {"c": {"every": 1, "fields": ["u"]}},
                         "output": "m.nc"})
    u = _stream(result.path, "c").u.values[:, 0, 0]
    omega = Wave2D(Wave2DParams(shape=shape)).mode_frequency(mode, dt)
    steps = np.arange(len(u))
    # Velocity Verlet from rest: u_n = u_0 cos(n theta), theta = omega dt, cos theta = 1 - dt^2 w^2/2.
    np.testing.assert_allclose(u, np.cos(omega * dt * steps), rtol=0, atol=1e-10)
    continuum = math.sqrt((2 * math.pi / 32) ** 2 * (1 + 4))
    assert abs(omega - continuum) / continuum < 0.02  # and close to the continuum frequency


def test_gray_scott_uniform_state_stays_uniform(backend, in_tmp):
    result = simkit.run({"solver": "gray_scott", "backend": backend,
                         "params": {"shape": [32, 32], "length": 0.3125},
                         "initial": {"kind": "uniform"}, "steps": 500, "outputs": {}})
    np.testing.assert_array_equal(result.state["u"], 1.0)
    np.testing.assert_array_equal(result.state["v"], 0.0)


@pytest.mark.parametrize("feed, kill", [(0.0367, 0.0649), (0.050, 0.065)])
def test_gray_scott_seeded_square_grows_into_a_pattern(in_tmp, feed, kill):
    # Pearson (1993): the 20-cell square of (1/2, 1/4) on (1, 0) replicates into spots/stripes.
    result = simkit.run({"solver": "gray_scott", "params": {"shape": [128, 128], "length": 1.25,
                                                            "feed": feed, "kill": kill},
                         "steps": 8000, "outputs": {"d": {"every": 2000,
                                                          "diagnostics": ["covered", "v_std"]}},
                         "output": "g.nc"})
    d = _stream(result.path, "d")
    covered = d.covered.values
    assert covered[-1] > 5 * covered[0] and covered[-1] < 0.9   # spread, but not everywhere
    assert d.v_std.values[-1] > 0.08                             # a pattern, not a uniform state
    assert np.all(np.diff(covered) > 0)


@pytest.mark.parametrize("name", ["jax", "torch"])
def test_gray_scott_backends_agree(in_tmp, name):
    require_backend(name)
    scenario = {"solver": "gray_scott", "params": {"shape": [64, 64], "length": 0.625},
                "steps": 300, "outputs": {}}
    ref = simkit.run({**scenario, "output": "a.nc"})
    got = simkit.run({**scenario, "backend": name, "output": "b.nc"})
    for f in ("u", "v"):
        np.testing.assert_allclose(got.state[f], ref.state[f], rtol=1e-12, atol=1e-14)
