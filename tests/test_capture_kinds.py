"""On-device conditions, wall-clock schedules, stage captures with probes, eager mode, NaN stop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import assert_bitwise, heat_scenario, require_backend
from simkit.cli import main
from simkit.errors import NonFiniteError


def _stream(path, name):
    with xr.open_dataset(path, group=name) as ds:
        return ds.load()


def test_when_below_stops_at_the_first_crossing(backend, in_tmp):
    result = simkit.run({
        "solver": "fixture_solvers:CountingDecay", "backend": backend, "steps": 40, "dt": 1.0,
        "outputs": {"low": {"when": {"diagnostic": "total", "below": 10.0}, "fields": ["u"],
                            "diagnostics": ["total"]}},
        "output": "w.nc"})
    low = _stream(result.path, "low")
    expected = math.ceil(math.log(10 / 36) / math.log(0.9))  # 36 * 0.9**k < 10
    assert list(low.step.values) == [expected]
    assert low.total.item() < 10 < 36 * 0.9 ** (expected - 1)


def _crossings(steps, dt, level, cooldown):
    fired, prev, until = [], math.sin(0.0) > level, 0
    for k in range(1, steps + 1):
        now = math.sin(k * dt) > level
        if now and not prev and k >= until:
            fired.append(k)
            until = k + cooldown + 1
        prev = now
    return fired


@pytest.mark.parametrize("cooldown", [0, 70])
def test_when_above_is_edge_triggered_with_cooldown(backend, in_tmp, cooldown):
    steps, dt = 400, 0.1
    result = simkit.run({
        "solver": "fixture_solvers:Oscillator", "backend": backend, "steps": steps, "dt": dt,
        "outputs": {"peaks": {"when": {"diagnostic": "value", "above": 0.9, "cooldown": cooldown},
                              "diagnostics": ["value"]}},
        "output": "osc.nc"})
    peaks = _stream(result.path, "peaks")
    assert list(peaks.step.values) == _crossings(steps, dt, 0.9, cooldown)
    assert len(peaks.step) >= 3 if cooldown == 0 else len(peaks.step) >= 2
    assert np.all(peaks.value.values > 0.9)


def test_wall_time_captures_are_exact_states(in_tmp):
    result = simkit.run(heat_scenario(steps=8000, params={"shape": [64, 64]},
                                      outputs={"wall": {"wall_time": 0.02, "fields": ["u"]}}))
    wall = _stream(result.path, "wall")
    steps = list(wall.step.values)
    assert len(steps) >= 3 and steps == sorted(set(steps)) and steps[-1] <= 8000
    k = int(steps[1])
    fresh = simkit.run(heat_scenario(steps=k, params={"shape": [64, 64]}, outputs={},
                                     output="fresh.nc"))
    assert_bitwise(wall.u.sel(step=k).values, fresh.state["u"])


def test_stage_capture_holds_the_probe_of_that_step(backend, in_tmp):
    outputs = {"every": {"every": 1, "fields": ["u"]},
               "mid": {"every": 5, "stage": "laplacian", "fields": ["laplacian", "u"]}}
    result = simkit.run(heat_scenario(backend=backend, steps=12, outputs=outputs))
    every, mid = _stream(result.path, "every"), _stream(result.path, "mid")
    assert list(mid.step.values) == [5, 10]  # no stage before step 0
    assert mid.laplacian.attrs["units"] == "K m-2"
    for k in (5, 10):
        u = every.u.sel(step=k - 1).values  # the stage runs on the state before step k
        lap = (np.roll(u, 1, 0) + np.roll(u, -1, 0) + np.roll(u, 1, 1) + np.roll(u, -1, 1) - 4 * u)
        np.testing.assert_allclose(mid.laplacian.sel(step=k).values, lap, rtol=0, atol=1e-13)
        assert_bitwise(mid.u.sel(step=k).values, u)
    plain = simkit.run(heat_scenario(backend=backend, steps=12, outputs={}, output="plain.nc"))
    np.testing.assert_allclose(result.state["u"], plain.state["u"], rtol=0, atol=1e-15)


def test_stage_capture_rejects_unknown_stage_and_foreign_probe(in_tmp):
    with pytest.raises(simkit.ScenarioError, match='unknown stage \\(did you mean "update"'):
        simkit.run(heat_scenario(outputs={"m": {"every": 2, "stage": "updat"}}))
    with pytest.raises(simkit.ScenarioError, match="unknown field; expected some of u, given"):
        simkit.run(heat_scenario(outputs={"m": {"every": 2, "fields": ["laplacian"]}}))


@pytest.mark.parametrize("name", ["jax", "torch"])
def test_eager_mode_matches_compiled(in_tmp, monkeypatch, name):
    require_backend(name)
    # Captures of a dynamo-compiled block; inductor's code is held to eager on every solver in
    # test_backend_paths (aot_eager here saves twenty seconds of C++ compilation).
    monkeypatch.setenv("SIMKIT_TORCH_COMPILER", "aot_eager")
    # compile=True: torch compiles only on a GPU by default, so leaving it out compared eager
    # with eager on the CPU.
    compiled = simkit.run(heat_scenario(backend=name, compile=True, output="c.nc"))
    eager = simkit.run(heat_scenario(backend=name, compile=False, output="e.nc"))
    np.testing.assert_allclose(eager.state["u"], compiled.state["u"], rtol=1e-13, atol=1e-15)
    with xr.open_dataset(eager.path, group="snap") as a, xr.open_dataset(compiled.path,
                                                                        group="snap") as b:
        assert list(a.step.values) == list(b.step.values)


def _first_overflow():
    u, k = 8.0, 0
    while math.isfinite(u):
        u, k = u * 2.0, k + 1
    return k


def test_non_finite_stops_naming_step_stage_field_and_keeps_last_good_state(backend, in_tmp):
    bad = _first_overflow()
    with pytest.raises(NonFiniteError) as info:
        simkit.run({"solver": "fixture_solvers:Doubling", "backend": backend, "steps": 2000,
                    "check_finite": 100, "outputs": {"s": {"every": 500}}, "output": "nan.nc"})
    assert str(info.value).startswith(
        f"non-finite value in field 'v' after stage 'scale' of step {bad} (time {bad:g});")
    with xr.open_dataset("nan.nc") as ds:
        assert int(ds.step) == bad - 1 and np.isfinite(ds.u.values).all()
        assert ds.attrs["simkit_status"] == "non-finite"
    assert list(_stream("nan.nc", "s").step.values) == [0, 500, 1000]  # none after the overflow


def test_non_finite_exit_code_is_3(in_tmp, capsys):
    (in_tmp / "s.yaml").write_text("solver: fixture_solvers:Doubling\nsteps: 1100\n")
    assert main(["run", "s.yaml", "-q"]) == 3
    assert "non-finite value in field 'v'" in capsys.readouterr().err


def test_a_plan_run_twice_captures_the_same_its_schedules_hold_no_run_state(in_tmp):
    """The cooldown of a condition lives in the run, not in the plan's schedule: a second run
    of the same plan starts it afresh."""
    from simkit.driver import execute
    from simkit.scenario import plan_run

    plan = plan_run({
        "solver": "fixture_solvers:Oscillator", "backend": "numpy", "steps": 400, "dt": 0.1,
        "outputs": {"peaks": {"when": {"diagnostic": "value", "above": 0.9, "cooldown": 70},
                              "diagnostics": ["value"]}},
        "output": "osc.nc"}, overwrite=True)
    first = list(_stream(execute(plan).path, "peaks").step.values)
    second = list(_stream(execute(plan).path, "peaks").step.values)
    assert first == second == _crossings(400, 0.1, 0.9, 70)
