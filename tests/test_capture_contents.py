"""Captures hold what they claim: vector diagnostics keep their own dimensions, stage captures are
copies at the moment taken, only end-of-step full states are checkpoints, and schedules carry
their own state (cooldowns, deadlines) through a resume."""

from __future__ import annotations

import shutil
import time

import netCDF4
import numpy as np
import pytest
import xarray as xr

import simkit
import simkit.errors
from conftest import assert_bitwise, heat_scenario, require_backend
from simkit.driver import execute_ensemble
from simkit.io import export_stream, rewrite, schema
from simkit.scenario import plan_run


@pytest.fixture(autouse=True)
def _fixture_solvers_allowed(monkeypatch):
    """The fixture solvers are named ``module:Class``, which needs the explicit opt-in."""
    monkeypatch.setenv("SIMKIT_ALLOW_IMPORT", "1")


def _stream(path, name):
    with xr.open_dataset(path, group=name) as ds:
        return ds.load()


def _cut(path, step):
    """Make ``path`` look like a run killed after ``step``: every stream keeps only its captures
    up to that step, and the file is marked unfinished."""
    with netCDF4.Dataset(path, "r") as ds:
        keep = {name: int(np.sum(ds.groups[name].variables["step"][:] <= step))
                for name in ds.getncattr(schema.ATTR_STREAMS).split()}
    rewrite(path, keep)
    with netCDF4.Dataset(path, "a") as ds:
        ds.setncattr(schema.ATTR_STATUS, schema.STATUS_RUNNING)


def _assert_same_streams(path, reference, names):
    for name in names:
        got, want = _stream(path, name), _stream(reference, name)
        assert list(got.step.values) == list(want.step.values), name
        for var in [*want.data_vars, *(c for c in want.coords if c == schema.SCHEDULE_STATE)]:
            assert_bitwise(got[var].values, want[var].values)


# ---------------------------------------------------------------- vector diagnostics


def test_vector_diagnostic_is_stored_along_its_declared_dimension(backend, in_tmp):
    result = simkit.run({
        "solver": "fixture_solvers:Histogram", "backend": backend, "steps": 5, "dt": 1.0,
        "outputs": {"d": {"every": 1, "diagnostics": ["total", "hist"]}}, "output": "h.nc"})
    d = _stream(result.path, "d")
    assert d.hist.dims == ("step", "bin")
    assert d.total.dims == ("step",)
    assert list(d.bin.values) == [0, 1, 2, 3]
    expected = 36.0 * 0.9 ** np.arange(6)
    np.testing.assert_allclose(d.total.values, expected, rtol=1e-12)
    np.testing.assert_allclose(d.hist.values, expected[:, None] * np.arange(1, 5), rtol=1e-12)


def test_vector_diagnostic_of_a_vectorized_ensemble_keeps_its_dimension(in_tmp):
    require_backend("jax")
    rates = (0.9, 0.5)
    plans = [plan_run({"solver": "fixture_solvers:Histogram", "backend": "jax", "steps": 3,
                       "params": {"rate": rate}, "output": f"m{i}.nc",
                       "outputs": {"d": {"every": 1, "diagnostics": ["hist"]}}})
             for i, rate in enumerate(rates)]
    results = execute_ensemble(plans, ["params.rate"])
    for rate, result in zip(rates, results, strict=True):
        d = _stream(result.path, "d")
        assert d.hist.dims == ("step", "bin")
        np.testing.assert_allclose(d.hist.values,
                                   36.0 * rate ** np.arange(4)[:, None] * np.arange(1, 5))


@pytest.mark.parametrize(("bad", "name", "expected", "given"),
                         [("flat", "flat", "()", "(4,)"), ("scalar", "vec", "(4,)", "()")])
def test_diagnostic_of_another_shape_than_declared_is_an_error(in_tmp, bad, name, expected,
                                                               given):
    with pytest.raises(ValueError) as error:
        simkit.run({"solver": "fixture_solvers:Histogram", "params": {"bad": bad}, "steps": 3,
                    "outputs": {"d": {"every": 1, "diagnostics": ["total", name]}},
                    "output": "h.nc"})
    message = str(error.value)
    assert "\n" not in message
    assert f"solver histogram: diagnostic {name!r}: expected shape {expected}" in message
    assert f"given {given}" in message


def test_diagnostic_dimension_must_be_a_solver_coordinate(in_tmp, monkeypatch):
    from fixture_solvers import Histogram

    only_index = Histogram.coordinates  # drops the ``bin`` coordinate the diagnostic names
    monkeypatch.setattr(Histogram, "coordinates", lambda self: only_index(self)[:1])
    with pytest.raises(ValueError, match="solver histogram: diagnostic 'hist': expected "
                                         "dimensions among the solver's coordinates"):
        simkit.run({"solver": "fixture_solvers:Histogram", "steps": 3,
                    "outputs": {"d": {"every": 1, "diagnostics": ["hist"]}}, "output": "h.nc"})


@pytest.mark.parametrize("where", ["outputs", "stop_when"])
def test_condition_on_a_vector_diagnostic_is_refused_before_the_run(in_tmp, where):
    data = {"solver": "fixture_solvers:Histogram", "steps": 3, "output": "h.nc",
            "outputs": {"d": {"every": 1, "diagnostics": ["total"]}}}
    condition = {"diagnostic": "hist", "above": 1.0}
    if where == "outputs":
        data["outputs"]["d"]["when"] = condition
    else:
        data["stop_when"] = condition
    with pytest.raises(simkit.errors.ScenarioError,
                       match=r"diagnostic: expected a scalar diagnostic \(total\), given 'hist' "
                             r"with dimensions \('bin',\)"):
        simkit.run(data)
    assert not (in_tmp / "h.nc").exists()


# ---------------------------------------------------------------- stage captures copy


def test_stage_capture_is_a_copy_when_later_stages_update_in_place(backend, in_tmp):
    result = simkit.run({
        "solver": "fixture_solvers:SquareThenShift", "backend": backend, "steps": 4, "dt": 1.0,
        "outputs": {"mid": {"every": 1, "stage": "square", "fields": ["sq", "u"]},
                    "ends": {"every": 1, "fields": ["u"]}},
        "output": "s.nc"})
    mid, ends = _stream(result.path, "mid"), _stream(result.path, "ends")
    u0 = np.arange(1.0, 9.0)
    assert list(mid.step.values) == [1, 2, 3, 4]
    for k in (1, 2, 3, 4):
        before = u0 * 0.5 ** (k - 1)  # the stage runs on the state before step k
        np.testing.assert_array_equal(mid.sq.sel(step=k).values, before * before)
        np.testing.assert_array_equal(mid.u.sel(step=k).values, before)
        np.testing.assert_array_equal(ends.u.sel(step=k).values, u0 * 0.5 ** k)


def test_two_stage_streams_in_one_step_take_that_step_once(backend, in_tmp):
    result = simkit.run({
        "solver": "fixture_solvers:SquareThenShift", "backend": backend, "steps": 3, "dt": 1.0,
        "outputs": {"mid": {"every": 1, "stage": "square", "fields": ["sq"]},
                    "late": {"every": 1, "stage": "shift", "fields": ["sq", "u"]}},
        "output": "s.nc"})
    mid, late = _stream(result.path, "mid"), _stream(result.path, "late")
    u0 = np.arange(1.0, 9.0)
    np.testing.assert_array_equal(result.state["u"], u0 * 0.5 ** 3)
    for k in (1, 2, 3):
        before = u0 * 0.5 ** (k - 1)
        np.testing.assert_array_equal(mid.sq.sel(step=k).values, before * before)
        np.testing.assert_array_equal(late.sq.sel(step=k).values, before * before + 5.0)
        np.testing.assert_array_equal(late.u.sel(step=k).values, before * 0.5)


# ---------------------------------------------------------------- what a checkpoint is


def test_resume_ignores_full_state_stage_captures(in_tmp):
    outputs = {"ckpt": {"every": 4, "fields": "all"},
               "lap": {"every": 3, "stage": "laplacian", "fields": "all"}}
    reference = simkit.run(heat_scenario(steps=12, outputs=outputs, output="ref.nc")).path
    path = in_tmp / "cut.nc"
    shutil.copy(reference, path)
    _cut(path, 10)  # the latest full-state capture is lap at 9, taken mid-step
    with netCDF4.Dataset(path) as ds:
        assert ds.groups["lap"].getncattr(schema.ATTR_STREAM_STAGE) == "laplacian"
    result = simkit.resume(path)
    assert result.step == 12
    with xr.open_dataset(reference) as ref:
        assert_bitwise(result.state["u"], ref.u.values)
    _assert_same_streams(path, reference, ("ckpt", "lap"))


# ---------------------------------------------------------------- schedule state in a run


def test_when_fires_at_a_step_taken_stage_by_stage(backend, in_tmp):
    result = simkit.run({
        "solver": "fixture_solvers:Oscillator", "backend": backend, "steps": 200, "dt": 0.1,
        "outputs": {"peaks": {"when": {"diagnostic": "value", "above": 0.9},
                              "diagnostics": ["value"]},
                    "mid": {"every": 4, "stage": "follow", "fields": ["u"]}},
        "output": "o.nc"})
    # sin(0.1 k) > 0.9 turns true at 12, 75, 137 and 200; 12 and 200 are stage-capture steps.
    assert list(_stream(result.path, "peaks").step.values) == [12, 75, 137, 200]


def test_resumed_run_keeps_capturing_by_wall_clock(in_tmp):
    outputs = {"wall": {"wall_time": 0.01, "fields": ["u"]},
               "ckpt": {"every": 3000, "fields": "all"}}
    # No finiteness checks: nothing but the wall clock cuts the stretch from 3000 to 6000.
    path = simkit.run(heat_scenario(steps=6000, params={"shape": [64, 64]}, outputs=outputs,
                                    check_finite=0, output="w.nc")).path
    _cut(path, 3000)
    start = time.perf_counter()
    simkit.resume(path)
    took = time.perf_counter() - start
    steps = [int(s) for s in _stream(path, "wall").step.values]
    assert steps == sorted(set(steps))
    # The rate that sizes segments counts the resumed process's own steps, not the checkpoint's
    # (which made the first segment run to the end).
    assert len([s for s in steps if 3000 < s < 6000]) >= min(3, int(took / 0.01) // 4)


def _oscillator(backend, output):
    return {"solver": "fixture_solvers:Oscillator", "backend": backend, "steps": 400, "dt": 0.1,
            "outputs": {"peaks": {"every": 10, "diagnostics": ["value"],
                                  "when": {"diagnostic": "value", "above": 0.9, "cooldown": 70}},
                        "ckpt": {"every": 50, "fields": "all"}},
            "output": output}


def test_resumed_run_captures_exactly_what_an_uninterrupted_one_does(backend, in_tmp):
    reference = simkit.run(_oscillator(backend, "ref.nc")).path
    peaks = _stream(reference, "peaks")
    assert [int(s) for s in peaks.step.values if s % 10] == [12, 137, 263, 389]
    with netCDF4.Dataset(reference) as ds:
        var = ds.groups["ckpt"].variables[schema.SCHEDULE_STATE]
        slots = var.getncattr(schema.ATTR_SCHEDULE_SLOTS).split()
        at_200 = dict(zip(slots, var[4, :].tolist(), strict=True))
        assert schema.SCHEDULE_STATE not in ds.groups["peaks"].variables  # not a full state
    assert at_200 == {"outputs.peaks.1.cooldown_until": 208.0}
    flat = export_stream(reference, "ckpt", in_tmp / "flat.nc")  # for tools: data only
    with netCDF4.Dataset(flat) as ds:
        assert schema.SCHEDULE_STATE not in ds.variables and "u" in ds.variables
        assert schema.SCHEDULE_SLOT_DIM not in ds.dimensions
    for cut in (230, 140):  # a kill, then a kill of the resumed run
        path = in_tmp / "cut.nc"
        if cut == 230:
            shutil.copy(reference, path)
        _cut(path, cut)
        result = simkit.resume(path)
        assert result.step == 400
        _assert_same_streams(path, reference, ("peaks", "ckpt"))
        with xr.open_dataset(reference) as ref:
            assert_bitwise(result.state["u"], ref.u.values)
