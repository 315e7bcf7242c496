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


def test_provenance_lists_the_given_attributes_in_file_order():
    import json

    from simkit.driver import RUN_PACKAGES, Provenance, versions
    from simkit.io import schema

    recording = Provenance(title="t", solver="record", solver_version="1", backend="jax",
                           device="cpu", dtype="float64", scenario="s", scenario_file="",
                           source="simkit", packages=("numpy",), started="2020-01-01T00:00:00")
    attrs = recording.attrs()
    assert list(attrs) == [schema.ATTR_TITLE, schema.ATTR_SOURCE, schema.ATTR_SOLVER,
                           schema.ATTR_SOLVER_VERSION, schema.ATTR_BACKEND, schema.ATTR_DEVICE,
                           schema.ATTR_DTYPE, schema.ATTR_SCENARIO, schema.ATTR_SCENARIO_FILE,
                           schema.ATTR_VERSIONS, schema.ATTR_STARTED]
    assert set(json.loads(attrs[schema.ATTR_VERSIONS])) == {"simkit", "numpy", "jax", "jaxlib"}
    assert set(json.loads(versions("numpy"))) == {"simkit", *RUN_PACKAGES}


def test_layout_builder_keeps_the_first_variable_of_a_name():
    from simkit.driver import LayoutBuilder
    from simkit.io import schema

    builder = LayoutBuilder([schema.CoordinateSpec("x", np.arange(3), "m", "x")], "s")
    u = builder.variable(schema.VariableSpec("u", ("x",), "K", "u", "float32"))
    assert builder.variable(schema.VariableSpec("u", ("x",), "K", "u", "float64")) is u
    builder.stream("snap", ["u"], [], None, ("outputs.snap.held",))
    layout = builder.layout(["u"])
    assert layout.fields == (u,) and layout.streams[0].fields == (u,)
    assert layout.streams[0].state_slots == ("outputs.snap.held",)
