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


def _every_step(backend: str, steps: int) -> tuple[dict, xr.Dataset]:
    """A 32-body Plummer run capturing x and v at every step, and its initial state."""
    result = simkit.run({"solver": "nbody", "backend": backend,
                         "params": {"bodies": 32, "softening": 0.05}, "steps": steps,
                         "dt": 1e-3, "seed": 3,
                         "outputs": {"start": {"first": True, "fields": "all"},
                                     "all": {"every": 1, "fields": ["x", "v"]}},
                         "output": f"every_{backend}.nc"})
    with xr.open_dataset(result.path, group="start") as start:
        initial = {name: start[name].values[0] for name in ("x", "v", "mass")}
    with xr.open_dataset(result.path, group="all") as captured:
        assert captured.step.values.tolist() == list(range(steps + 1))
        return initial, captured.isel(step=slice(1, None)).load()


def _two_kicks_per_step(backend: str, initial: dict, steps: int) -> list[dict]:
    """The leapfrog step by step, each step on its own: ``kick1`` computes the acceleration
    again (two force evaluations a step, as before the acceleration was carried)."""
    from simkit.solver import load_solver, make_step

    solver = load_solver("nbody")(load_solver("nbody").Params(bodies=32, softening=0.05))
    step = make_step(solver, 3)
    if backend == "torch":
        import torch
        fields = {name: torch.from_numpy(value.copy()) for name, value in initial.items()}
    else:
        fields = {name: value.copy() for name, value in initial.items()}
    states = []
    for i in range(steps):
        fields = step(fields, 1e-3, i, i * 1e-3)
        assert set(fields) == {"x", "v", "mass"}  # nothing carried out of a step on its own
        states.append({name: np.asarray(fields[name]) for name in ("x", "v")})
    return states


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_carried_acceleration_gives_the_two_kick_trajectory_bit_for_bit(kind, in_tmp):
    require_backend(kind)
    initial, captured = _every_step(kind, 40)
    reference = _two_kicks_per_step(kind, initial, 40)
    for name in ("x", "v"):
        assert np.array_equal(captured[name].values, np.stack([s[name] for s in reference]))


def test_carried_acceleration_on_jax_differs_from_two_kicks_by_rounding_only(in_tmp):
    # XLA compiles the two evaluations of a step apart (fused with what feeds them), so before
    # the acceleration was carried kick1 and the previous kick2 already differed in the last
    # bits; carried, both kicks use kick2's.
    require_backend("jax")
    initial, captured = _every_step("jax", 40)
    reference = _two_kicks_per_step("numpy", initial, 40)
    for name in ("x", "v"):
        expected = np.stack([s[name] for s in reference])
        assert np.abs(captured[name].values - expected).max() < 1e-12 * np.abs(expected).max()


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_one_force_evaluation_per_step_and_files_hold_only_the_fields(kind, in_tmp, monkeypatch):
    require_backend(kind)
    from solvers import _pairs

    calls = []
    original = getattr(_pairs, f"acceleration_{kind}")

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(_pairs, f"acceleration_{kind}", counted)
    result = simkit.run({"solver": "nbody", "backend": kind, "params": {"bodies": 16},
                         "steps": 50, "outputs": {"e": {"every": 10, "diagnostics": ["energy"]},
                                                  "c": {"every": 25, "fields": "all"}},
                         "output": "count.nc"})
    assert len(calls) == 50 + 1  # one a step, and one where the block starts
    assert sorted(result.state) == ["mass", "v", "x"]
    with xr.open_dataset(result.path) as final, xr.open_dataset(result.path, group="c") as c:
        assert sorted(final.data_vars) == ["mass", "v", "x"]
        assert sorted(c.data_vars) == ["mass", "v", "x"]
