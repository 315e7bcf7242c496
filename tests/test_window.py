"""The ``window`` schedule: dense captures inside a step window, ``window: {start, stop, every}``,
alone or inside ``any``, through every part of the engine (runs, ensembles, the recorder,
gradient streams, resume, the size guard)."""

from __future__ import annotations

import warnings

import jsonschema
import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml
from hypothesis import given
from hypothesis import strategies as st

import simkit
from conftest import assert_bitwise, heat_scenario, require_backend
from simkit.errors import ScenarioError
from simkit.schedule import (
    KINDS,
    MAX_STEP,
    SCHEDULE_KEYS,
    VALID_FORMS,
    AnyOf,
    Every,
    Last,
    Stream,
    Window,
    parse_schedule,
    parse_stream,
    stream_json_schema,
)

# ------------------------------------------------------------------ the kind


def _walk(schedule, horizon):
    steps, step = [], -1
    while (step := schedule.next_step(step)) is not None and step <= horizon:
        steps.append(step)
    return steps


@given(st.integers(0, 60), st.integers(0, 60), st.integers(1, 9), st.integers(0, 150))
def test_window_fires_inside_its_window_every_n(start, length, every, steps):
    window = Window(start, start + length, every)
    expected = list(range(start, start + length + 1, every))
    assert _walk(window, 200) == [s for s in range(201) if window.fires(s, float(s))] == expected
    assert window.count(steps, float(steps)) == len([s for s in expected if s <= steps])
    assert window.step_count(steps) == len([s for s in expected if s <= steps])
    assert window.beyond(steps) == ()


def test_window_is_a_step_schedule_known_in_advance():
    window = Window(10, 20)
    assert window.every == 1 and window.kind == "window" and KINDS["window"] is Window
    assert window.known_in_advance and not window.at_end and window.next_time(0.0) is None
    assert window.edge is None and window.level is None and window.wall_clock is None
    assert window.init_state().save() == {} and window.due(window.init_state(), 12, 1.2, None)
    assert not window.due(window.init_state(), 21, 2.1, None)
    assert window.next_step(20) is None and window.next_step(-5) == 10
    assert Window(10, 20, 4).next_step(15) == 18 and Window(10, 20, 4).next_step(18) is None
    assert hash(window) == hash(Window(10, 20, 1)) and window == Window(10, 20)
    assert "window" in SCHEDULE_KEYS and any(f.startswith("window:") for f in VALID_FORMS)


@pytest.mark.parametrize("spec, expected", [
    ({"window": {"start": 1000, "stop": 2000, "every": 10}}, Window(1000, 2000, 10)),
    ({"window": {"start": 3, "stop": 3}}, Window(3, 3, 1)),
    ({"window": {"start": 5, "stop": 9}, "every": 100, "last": True},
     AnyOf((Window(5, 9), Every(100), Last()))),
    ({"any": [{"every": 50}, {"window": {"start": 0, "stop": 4, "every": 2}}]},
     AnyOf((Every(50), Window(0, 4, 2)))),
])
def test_parse_window_alone_or_in_a_union(spec, expected):
    assert parse_schedule(spec) == expected
    assert Stream(**spec).schedule == expected


@pytest.mark.parametrize("spec, key, fragment", [
    ({"window": 5}, "s.window", "expected {start: S, stop: E [, every: N]}, given 5"),
    ({"window": {"start": 1}}, "s.window", "(without stop)"),
    ({"window": {"start": 1, "stop": 5, "evry": 2}}, "s.window.evry", 'did you mean "every"'),
    ({"window": {"start": -1, "stop": 5}}, "s.window.start", "expected an integer from 0"),
    ({"window": {"start": 1.5, "stop": 5}}, "s.window.start", "given 1.5"),
    ({"window": {"start": 9, "stop": 5}}, "s.window.stop", "from start (9)"),
    ({"window": {"start": 0, "stop": MAX_STEP + 1}}, "s.window.stop", f"to {MAX_STEP}"),
    ({"window": {"start": 0, "stop": 5, "every": 0}}, "s.window.every", ">= 1, given 0"),
    ({"window": {"start": 0, "stop": 5, "every": True}}, "s.window.every", "given True"),
    ({"any": [{"at": [1]}, {"window": {"start": 0}}]}, "s.any[1].window", "(without stop)"),
    ({"windw": {"start": 0, "stop": 1}}, "s.windw", 'did you mean "window"'),
])
def test_window_errors_name_the_key(spec, key, fragment):
    with pytest.raises(ScenarioError) as info:
        parse_schedule(spec, key="s")
    assert info.value.key == key and fragment in info.value.message


def test_window_json_schema():
    validator = jsonschema.Draft202012Validator({"type": "object",
                                                 "additionalProperties": stream_json_schema()})
    assert not list(validator.iter_errors({"s": {"window": {"start": 1, "stop": 5}}}))
    assert not list(validator.iter_errors(
        {"s": {"any": [{"window": {"start": 1, "stop": 5, "every": 2}}]}}))
    for bad in ({"window": {"start": 1}}, {"window": {"start": 1, "stop": 2, "x": 1}},
                {"window": {"start": 1, "stop": 2, "every": 0}}):
        assert list(validator.iter_errors({"s": bad}))
        with pytest.raises(ScenarioError):
            parse_stream("s", bad, "outputs.s")


# ------------------------------------------------------------------ through the engine


def _steps(path, group):
    with xr.open_dataset(path, group=group) as ds:
        return [int(s) for s in ds.step.values]


def _windowed(**overrides) -> dict:
    outputs = {
        "dense": {"window": {"start": 10, "stop": 16, "every": 2}, "fields": ["u"]},
        "mixed": {"any": [{"every": 10}, {"window": {"start": 21, "stop": 23}}],
                  "diagnostics": ["energy"]},
        "tail": {"window": {"start": 27, "stop": 40, "every": 5}, "diagnostics": ["energy"]},
    }
    return heat_scenario(**{"steps": 30, "dt": 0.05, "outputs": outputs, **overrides})


def test_a_run_captures_exactly_the_window(in_tmp):
    scenario = _windowed()
    scenario["outputs"]["staged"] = {"window": {"start": 3, "stop": 5}, "stage": "laplacian",
                                     "fields": ["laplacian"]}
    result = simkit.run(scenario)
    assert _steps(result.path, "staged") == [3, 4, 5]
    assert _steps(result.path, "dense") == [10, 12, 14, 16]
    assert _steps(result.path, "mixed") == [0, 10, 20, 21, 22, 23, 30]
    assert _steps(result.path, "tail") == [27]
    # Each capture is the state of a run of that many steps.
    with xr.open_dataset(result.path, group="dense") as ds:
        fresh = simkit.run(heat_scenario(steps=14, dt=0.05, outputs={}, output="fresh.nc"))
        assert_bitwise(ds.u.sel(step=14).values, fresh.state["u"])


def test_a_resumed_run_captures_what_an_uninterrupted_one_does(in_tmp):
    from simkit.io import rewrite, schema

    scenario = _windowed(outputs={
        "dense": {"window": {"start": 8, "stop": 20, "every": 3}, "fields": ["u"]},
        "checkpoint": {"every": 6, "fields": "all"}})
    whole = simkit.run({**scenario, "output": "whole.nc"})
    interrupted = simkit.run({**scenario, "output": "cut.nc"})
    with netCDF4.Dataset(interrupted.path) as ds:  # as a run killed after step 13 leaves it
        keep = {name: int(np.sum(ds.groups[name].variables["step"][:] <= 13))
                for name in ds.getncattr(schema.ATTR_STREAMS).split()}
    rewrite(interrupted.path, keep)
    with netCDF4.Dataset(interrupted.path, "a") as ds:
        ds.setncattr(schema.ATTR_STATUS, schema.STATUS_RUNNING)
    resumed = simkit.resume(interrupted.path)
    assert resumed.step == whole.step == 30
    assert _steps(resumed.path, "dense") == _steps(whole.path, "dense") == [8, 11, 14, 17, 20]
    with xr.open_dataset(resumed.path, group="dense") as a, \
            xr.open_dataset(whole.path, group="dense") as b:
        assert a.u.values.tobytes() == b.u.values.tobytes()


def test_an_ensemble_member_captures_the_window_of_a_run_of_its_own(in_tmp):
    require_backend("jax")
    from simkit.driver import execute_ensemble
    from simkit.scenario import plan_run

    def member(d, output):
        return _windowed(backend="jax", output=output, params={"diffusivity": d})

    plans = [plan_run(member(d, f"m{i}.nc")) for i, d in enumerate((0.5, 1.5))]
    results = execute_ensemble(plans, ["params.diffusivity"])
    for i, (d, result) in enumerate(zip((0.5, 1.5), results, strict=True)):
        single = simkit.run(member(d, f"single{i}.nc"))
        for group in ("dense", "mixed", "tail"):
            assert _steps(result.path, group) == _steps(single.path, group)
        with xr.open_dataset(result.path, group="dense") as a, \
                xr.open_dataset(single.path, group="dense") as b:
            assert a.u.values.tobytes() == b.u.values.tobytes()


def test_the_recorder_captures_the_window(in_tmp):
    outputs = {"w": {"window": {"start": 3, "stop": 9, "every": 3}, "diagnostics": ["loss"]},
               "u": {"any": [{"window": {"start": 1, "stop": 2}}, {"at": [7]}],
                     "fields": ["g"]}}
    with simkit.record("w.nc", outputs) as rec:
        for i in range(12):
            rec.step(i, loss=float(i) / 10, g=np.full(3, float(i)))
    assert _steps("w.nc", "w") == [3, 6, 9]
    assert _steps("w.nc", "u") == [1, 2, 7]
    with xr.open_dataset("w.nc", group="w") as ds:
        np.testing.assert_array_equal(ds.loss.values, [0.3, 0.6, 0.9])


def test_a_window_on_a_stage_is_a_step_schedule_for_the_recorder(in_tmp):
    with simkit.record("s.nc", {"s": {"window": {"start": 2, "stop": 4}, "stage": "half",
                                      "fields": ["h"]}}) as rec:
        for i in range(6):
            if i:
                with rec.stage("half"):
                    rec.probe("h", np.full(2, i + 0.5))
            rec.step(i, u=np.full(2, float(i)))
    assert _steps("s.nc", "s") == [2, 3, 4]
    with xr.open_dataset("s.nc", group="s") as ds:
        np.testing.assert_array_equal(ds.h.values[:, 0], [2.5, 3.5, 4.5])


def test_a_gradient_stream_on_a_window(in_tmp):
    require_backend("jax")
    from simkit.autodiff import value_and_grad

    scenario = {"solver": "heat2d", "params": {"shape": [6, 7], "diffusivity": 0.7},
                "initial": {"kind": "noise"}, "steps": 9, "dt": 0.1, "seed": 1}

    def loss(final, captures):
        return sum((v * v).sum() for v in final.values())

    window = value_and_grad(scenario, loss, ["u"], backend="jax", gradients={
        "adjoint": {"window": {"start": 2, "stop": 8, "every": 3}, "fields": ["u"]}})
    listed = value_and_grad(scenario, loss, ["u"], backend="jax", gradients={
        "adjoint": {"at": [2, 5, 8], "fields": ["u"]}})
    np.testing.assert_array_equal(window.adjoints["adjoint"]["step"], [2, 5, 8])
    np.testing.assert_array_equal(window.adjoints["adjoint"]["u"], listed.adjoints["adjoint"]["u"])


def test_validate_counts_a_window_for_the_size_guard(in_tmp, capsys):
    from simkit.cli import main
    from simkit.scenario import plan_run

    # Counted in closed form: a window of 10**11 steps is refused at once, not enumerated.
    with pytest.raises(ScenarioError, match=r"outputs.dense: expected at most 1099511627776 "
                                            r"captures in one stream, given a schedule making "
                                            r"about 2.2e\+12"):
        plan_run(heat_scenario(steps=2**41, outputs={
            "dense": {"window": {"start": 10, "stop": 2**41 - 1}, "diagnostics": ["energy"]}}))
    # The same window thinned to fit passes; its count is the window's, not the run's.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = plan_run(heat_scenario(steps=2**41, outputs={
            "dense": {"window": {"start": 10, "stop": 2**41 - 1, "every": 4},
                      "diagnostics": ["energy"]}}))
    assert plan.streams[0].schedule.count(2**41, 0.0) == (2**41 - 1 - 10) // 4 + 1
    # Large windows of fields draw the size warning.
    with pytest.warns(simkit.scenario.SimkitWarning, match="outputs.dense will write about"):
        plan_run(heat_scenario(steps=10**7, outputs={
            "dense": {"window": {"start": 0, "stop": 10**7}, "fields": ["u"]}}))
    # The command line says the same, in one line.
    (in_tmp / "s.yaml").write_text(yaml.safe_dump(heat_scenario(steps=2**41, outputs={
        "dense": {"window": {"start": 0, "stop": 2**41}, "fields": ["u"]}})))
    assert main(["validate", "s.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outputs.dense: expected at most 1099511627776 captures" in err
    # A window entirely after the end captures nothing: refused like any such schedule.
    with pytest.raises(ScenarioError, match="outputs.late: expected a schedule that captures "
                                            "within the run"):
        plan_run(heat_scenario(steps=12, outputs={
            "late": {"window": {"start": 20, "stop": 30}, "fields": ["u"]}}))
