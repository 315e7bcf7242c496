"""Streams and conditions given as Python objects (``simkit.Stream``, schedules, ``When``) plan,
record and run exactly as the mappings a scenario file holds."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import simkit
from conftest import heat_scenario
from simkit.errors import ScenarioError
from simkit.scenario import Scenario, plan_run
from simkit.schedule import At, Every, Last, LogSpaced, SimTime, Stream, WallTime, When, While

AS_MAPPINGS = {
    "snap": {"every": 3, "offset": 1, "fields": ["u"]},
    "hot": {"when": {"diagnostic": "energy", "above": 0.5, "cooldown": 2}, "fields": ["u"]},
    "both": {"every": 5, "last": True, "diagnostics": ["energy"]},
    "twice": {"any": [{"every": 4}, {"every": 6}], "diagnostics": ["heat"]},
    "mid": {"at": [2, 5], "fields": ["laplacian"], "stage": "laplacian",
            "summaries": {"laplacian": ["max"]}},
    "level": {"while": {"diagnostic": "energy", "below": 1e9, "every": 2},
              "diagnostics": ["energy"]},
    "log": {"logspace": {"start": 1, "stop": 10, "num": 3}},
    "times": {"sim_time": 0.5, "start": 0.25, "diagnostics": ["max_abs"]},
    "clock": {"wall_time": 60.0, "diagnostics": ["energy"]},
}
AS_OBJECTS = {
    "snap": Stream(every=3, offset=1, fields=["u"]),
    "hot": Stream(when=When("energy", above=0.5, cooldown=2), fields=["u"]),
    "both": Stream(schedule=Every(5) | Last(), diagnostics=["energy"]),
    "twice": Stream(schedule=Every(4) | Every(6), diagnostics=["heat"]),
    "mid": Stream(at=[2, 5], stage="laplacian", fields=["laplacian"],
                  summaries={"laplacian": ["max"]}),
    "level": Stream(schedule=While("energy", below=1e9, every=2),
                    diagnostics=["energy"]),
    "log": LogSpaced(1, 10, 3),  # a bare schedule: a stream keeping every field
    "times": Stream(schedule=SimTime(0.5, 0.25), diagnostics=["max_abs"]),
    "clock": Stream(schedule=WallTime(60.0), diagnostics=["energy"]),
}
STOP = {"diagnostic": "energy", "below": 1e-12}


def _same_plans(a, b):
    assert a.text == b.text  # recorded in the file: what resume plans from
    assert [(s.name, s.schedule, s.fields, s.diagnostics, s.stage) for s in a.streams] == \
        [(s.name, s.schedule, s.fields, s.diagnostics, s.stage) for s in b.streams]
    assert a.stop_when == b.stop_when


def test_streams_and_stop_condition_as_objects_plan_as_their_mappings(in_tmp):
    written = plan_run(heat_scenario(outputs=AS_MAPPINGS, stop_when=STOP))
    given = plan_run(heat_scenario(outputs=AS_OBJECTS, stop_when=When(**STOP)))
    _same_plans(given, written)
    # Keyword overrides and a Scenario built in Python take them too.
    _same_plans(plan_run(heat_scenario(outputs={}), overrides={"outputs": AS_OBJECTS,
                                                     "stop_when": When(**STOP)}),
                plan_run(heat_scenario(outputs=AS_MAPPINGS, stop_when=STOP)))
    built = Scenario(**heat_scenario(outputs=AS_OBJECTS, stop_when=When(**STOP)))
    _same_plans(plan_run(built), written)


def test_a_run_of_stream_objects_writes_the_file_of_their_mappings(in_tmp):
    outputs = {name: AS_OBJECTS[name] for name in ("snap", "both", "twice", "mid")}
    simkit.run(heat_scenario(outputs=outputs, output="objects.nc"))
    simkit.run(heat_scenario(outputs={name: AS_MAPPINGS[name] for name in outputs},
                             output="mappings.nc"))
    for group in outputs:
        with xr.open_dataset("objects.nc", group=group) as a, \
                xr.open_dataset("mappings.nc", group=group) as b:
            assert set(a.variables) == set(b.variables)
            for name in a.variables:
                np.testing.assert_array_equal(a[name].values, b[name].values)


def test_a_schedule_no_mapping_says_is_refused_naming_its_key(in_tmp):
    class Odd(At):  # not registered under a key: nothing in a file could say it
        pass

    with pytest.raises(ScenarioError, match=r"^<scenario>: outputs\.odd: expected a schedule a "
                                            r"scenario can say as a mapping, given .*Odd\(steps=\(2, 3\)\)$"):
        plan_run(heat_scenario(outputs={"odd": Stream(schedule=Odd((2, 3)))}))


def test_a_wall_time_on_a_clock_of_its_own_is_refused_in_scenario_data(in_tmp):
    fake = WallTime(5.0, clock=lambda: 0.0)
    with pytest.raises(ScenarioError, match=r"outputs\.wall: expected a wall_time on the wall "
                                            r"clock, .*kept in this process only"):
        plan_run(heat_scenario(outputs={"wall": Stream(schedule=fake)}))
    assert plan_run(heat_scenario(outputs={"wall": Stream(wall_time=5.0)})).streams


def test_each_kind_says_its_own_mapping():
    assert (Every(10, 5) | Last()).to_spec() == {"every": 10, "offset": 5, "last": True}
    assert (Every(10) | Every(3)).to_spec() == {"any": [{"every": 10}, {"every": 3}]}
    level = While("e", below=1.0, every=2)
    assert level.to_spec() == {"while": {"diagnostic": "e", "below": 1.0, "every": 2}}
    assert WallTime(4.0).to_spec() == {"wall_time": 4.0}


def test_a_stream_of_all_fields_plans_as_its_mapping(in_tmp):
    typed = plan_run(heat_scenario(outputs={"a": Stream(every=2, fields="all")}))
    _same_plans(plan_run(heat_scenario(outputs={"a": {"every": 2, "fields": "all"}})), typed)
