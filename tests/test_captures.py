"""Captures are exact copies: a capture at step k equals a fresh run of k steps, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import assert_bitwise, heat_scenario, lorenz_scenario, require_backend


def _captures(path, stream):
    with xr.open_dataset(path, group=stream) as ds:
        return ds.load()


@pytest.mark.parametrize("make", [heat_scenario, lorenz_scenario], ids=["heat2d", "lorenz63"])
def test_capture_at_step_k_equals_fresh_run_of_k_steps(backend, in_tmp, make):
    scenario = make(backend=backend)
    stream = next(iter(scenario["outputs"]))
    result = simkit.run(scenario)
    captured = _captures(result.path, stream)
    assert len(captured.step) >= 3
    for k in captured.step.values:
        fresh = simkit.run(make(backend=backend, steps=int(k), outputs={},
                                output=f"fresh{k}.nc"))
        for name, value in fresh.state.items():
            assert_bitwise(captured[name].sel(step=k).values, value)


def test_explicit_steps_capture_exactly_those(backend, in_tmp):
    result = simkit.run(heat_scenario(backend=backend))
    assert list(_captures(result.path, "early").step.values) == [2, 5, 8]
    assert list(_captures(result.path, "snap").step.values) == [0, 3, 6, 9, 12]
    assert list(_captures(result.path, "diag").step.values) == list(range(13))


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_in_place_solver_never_alters_earlier_captures(in_tmp, name):
    require_backend(name)
    result = simkit.run({
        "solver": "fixture_solvers:InPlaceDecay", "backend": name, "steps": 6,
        "outputs": {"all": {"every": 1, "fields": ["u"], "diagnostics": ["total"]}},
        "output": "inplace.nc",
    })
    captured = _captures(result.path, "all")
    start = np.arange(1.0, 9.0)
    for k in range(7):
        np.testing.assert_array_equal(captured.u.sel(step=k).values, start * 0.5**k)
        assert captured.total.sel(step=k).item() == start.sum() * 0.5**k
    np.testing.assert_array_equal(result.state["u"], start * 0.5**6)


def test_jax_traces_the_step_once_per_run_whatever_the_schedule(in_tmp):
    require_backend("jax")
    from fixture_solvers import TRACES

    TRACES["count"] = 0
    simkit.run({
        "solver": "fixture_solvers:CountingDecay", "backend": "jax", "until": 10.0, "dt": 0.3,
        "outputs": {"a": {"at": [1, 2, 7, 19], "fields": ["u"]},
                    "b": {"sim_time": 0.7, "fields": ["u"]},
                    "c": {"logspace": [1, 30, 6], "diagnostics": ["total"], "last": True}},
        "output": "count.nc",
    })
    assert TRACES["count"] == 1


def test_sim_time_capture_lands_on_the_times(backend, in_tmp):
    result = simkit.run({
        "solver": "fixture_solvers:CountingDecay", "backend": backend, "until": 2.0, "dt": 0.3,
        "outputs": {"t": {"sim_time": 0.5, "fields": ["u"]}, "end": {"last": True}},
        "output": "t.nc",
    })
    captured = _captures(result.path, "t")
    np.testing.assert_allclose(captured.time.values, [0, 0.5, 1.0, 1.5, 2.0], rtol=0, atol=1e-15)
    # Each interval of 0.5 is a step of 0.3 and one shortened to 0.2.
    assert list(captured.step.values) == [0, 2, 4, 6, 8]
    assert result.time == 2.0 and result.step == 8
    assert list(_captures(result.path, "end").step.values) == [8]
    # u(t) is the product of (1 - 0.1 dt) over the steps actually taken.
    expected = np.prod([1 - 0.1 * h for h in (0.3, 0.2) * 4])
    np.testing.assert_allclose(result.state["u"], np.arange(1.0, 9.0) * expected, rtol=1e-12)
