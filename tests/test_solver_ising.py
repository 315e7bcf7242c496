"""2D Ising: Onsager's exact results, bit-for-bit reproducibility, the counter-based RNG."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import assert_bitwise
from simkit.solver import counter_uniform
from solvers.ising2d import CRITICAL_TEMPERATURE, onsager_energy, onsager_magnetization


def _ising(backend="numpy", temperature=2.0, steps=200, seed=0, output="i.nc", every=2):
    return simkit.run({"solver": "ising2d", "backend": backend, "seed": seed,
                       "params": {"temperature": temperature, "shape": [64, 64]},
                       "initial": {"kind": "up"}, "steps": steps,
                       "outputs": {"e": {"every": every,
                                         "diagnostics": ["energy", "abs_magnetization"]}},
                       "output": output})


@pytest.mark.parametrize("temperature", [1.8, 3.0])
def test_agrees_with_onsager_away_from_the_critical_point(in_tmp, temperature):
    assert abs(temperature - CRITICAL_TEMPERATURE) > 0.4
    result = _ising(temperature=temperature, steps=3000)
    with xr.open_dataset(result.path, group="e") as e:
        sample = e.sel(step=slice(500, None))  # after burn-in
        energy, magnetization = float(sample.energy.mean()), float(sample.abs_magnetization.mean())
    # Onsager (1944) energy; Yang (1952) magnetization. Tolerance: statistical error of ~1250
    # correlated sweeps of 64^2 spins, plus finite size (exponentially small away from T_c).
    assert abs(energy - onsager_energy(temperature)) < 0.005, energy
    if temperature < CRITICAL_TEMPERATURE:
        assert abs(magnetization - onsager_magnetization(temperature)) < 0.005, magnetization
    else:
        assert magnetization < 0.1  # zero in the thermodynamic limit; ~1/sqrt(N) here


def test_reproducible_bit_for_bit_and_identical_across_backends(backend, in_tmp):
    first = _ising(backend, output="a.nc")
    again = _ising(backend, output="b.nc")
    other_seed = _ising(backend, seed=1, output="c.nc")
    numpy_run = _ising("numpy", output="d.nc")
    assert_bitwise(first.state["spin"], again.state["spin"])
    assert not np.array_equal(first.state["spin"], other_seed.state["spin"])
    # The hash is integer arithmetic: every backend draws the same numbers.
    np.testing.assert_array_equal(first.state["spin"], numpy_run.state["spin"])


def test_counter_uniform_is_uniform_and_decorrelated():
    index = np.arange(1 << 20, dtype=np.int64)
    draws = counter_uniform(index, 3, 10, np.zeros(1))
    assert draws.min() >= 0 and draws.max() < 1
    counts, _ = np.histogram(draws, bins=64, range=(0, 1))
    expected = len(draws) / 64
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 120  # 63 degrees of freedom: p ~ 1e-5 at 120
    other = counter_uniform(index, 3, 11, np.zeros(1))
    assert abs(np.corrcoef(draws, other)[0, 1]) < 0.005
    assert abs(np.corrcoef(draws[:-1], draws[1:])[0, 1]) < 0.005
