"""Schedules: fired steps equal a brute-force scan (Hypothesis), time landing, parse errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simkit.errors import ScenarioError
from simkit.schedule import (
    AnyOf,
    At,
    Every,
    First,
    Last,
    LogSpaced,
    SimTime,
    parse_schedule,
)

HORIZON = 400

every = st.builds(Every, st.integers(1, 60), st.integers(0, 80))
at = st.builds(At, st.lists(st.integers(0, HORIZON + 20), min_size=1, max_size=12))
logspaced = st.integers(1, 50).flatmap(
    lambda start: st.builds(LogSpaced, st.just(start), st.integers(start, HORIZON + 50),
                            st.integers(1, 30)))
first = st.just(First())
step_schedules = st.one_of(every, at, logspaced, first)
unions = st.lists(step_schedules, min_size=1, max_size=4).map(lambda m: AnyOf(tuple(m)))


def walk(schedule, horizon=HORIZON):
    """The steps the driver visits by asking next_step repeatedly."""
    steps, step = [], -1
    while True:
        step = schedule.next_step(step)
        if step is None or step > horizon:
            return steps
        steps.append(step)


def scan(schedule, horizon=HORIZON):
    return [s for s in range(horizon + 1) if schedule.fires(s, float(s))]


@given(step_schedules)
def test_step_schedule_next_step_matches_brute_force(schedule):
    assert walk(schedule) == scan(schedule)


@given(unions)
def test_union_fires_on_the_union_of_its_members(schedule):
    expected = sorted({s for member in schedule.members for s in scan(member)})
    assert walk(schedule) == scan(schedule) == expected


@given(st.integers(1, 60), st.integers(0, 80))
def test_every_matches_its_definition(n, offset):
    assert scan(Every(n, offset)) == list(range(offset, HORIZON + 1, n))


def test_logspace_is_geometric_and_deduplicated():
    assert LogSpaced(1, 1000, 4).steps == (1, 10, 100, 1000)
    assert LogSpaced(1, 4, 10).steps == (1, 2, 3, 4)


def test_first_and_last():
    assert walk(First()) == [0]
    assert walk(Last()) == [] and Last().at_end and not First().at_end
    assert (Every(5) | Last()).at_end


def land(schedule, dt, until):
    """Drive simulated time as the driver does: land on every target exactly."""
    from simkit.driver._blocks import steps_to_time

    time, landed = 0.0, [0.0] if schedule.fires(0, 0.0) else []
    while True:
        target = schedule.next_time(time)
        if target is None or target > until:
            return landed
        k, last = steps_to_time(time, target, dt)
        assert k >= 1 and 0 < last <= dt * (1 + 1e-9)
        time = target
        assert schedule.fires(0, time)
        landed.append(time)


@given(st.floats(0.01, 5.0), st.one_of(st.just(0.0), st.floats(1e-3, 3.0)), st.floats(0.001, 1.0))
def test_sim_time_lands_on_every_target(interval, start, dt):
    schedule = SimTime(interval, start)
    until = start + 20 * interval
    expected = [start + k * interval for k in range(21)]
    landed = land(schedule, dt, until * (1 + 1e-12))
    assert landed == pytest.approx(expected, rel=1e-12, abs=1e-12)


@given(st.floats(0.01, 5.0), st.floats(0.0005, 1.0))
def test_sim_time_fires_nowhere_between_targets(interval, dt):
    schedule = SimTime(interval)
    for k in range(10):
        assert schedule.fires(0, k * interval)
        assert not schedule.fires(0, (k + 0.5) * interval)


@pytest.mark.parametrize("spec, expected", [
    ({"every": 10}, Every(10)),
    ({"every": 10, "offset": 3}, Every(10, 3)),
    ({"at": [8, 2, 5, 5]}, At((2, 5, 8))),
    ({"logspace": {"start": 1, "stop": 100, "num": 3}}, LogSpaced(1, 100, 3)),
    ({"logspace": [1, 100, 3]}, LogSpaced(1, 100, 3)),
    ({"sim_time": 0.5}, SimTime(0.5)),
    ({"sim_time": 0.5, "start": 1.0}, SimTime(0.5, 1.0)),
    ({"first": True}, First()),
    ({"last": True}, Last()),
    ({"every": 10, "last": True}, AnyOf((Every(10), Last()))),
    ({"any": [{"every": 7}, {"at": [3]}]}, AnyOf((Every(7), At((3,))))),
])
def test_parse_schedule_builds_each_form(spec, expected):
    assert parse_schedule(spec) == expected


@pytest.mark.parametrize("spec, key, fragment", [
    ({"evry": 10}, "s.evry", 'did you mean "every"'),
    ({"every": 0}, "s.every", "expected an integer >= 1, given 0"),
    ({"every": 2.5}, "s.every", "given 2.5"),
    ({"every": True}, "s.every", "given True"),
    ({"offset": 3}, "s.offset", "only together with 'every'"),
    ({"at": []}, "s.at", "non-empty list"),
    ({"at": [1, -2]}, "s.at", "integers >= 0"),
    ({"logspace": [10, 1, 3]}, "s.logspace.stop", ">= start"),
    ({"logspace": "1..10"}, "s.logspace", "{start: S, stop: E, num: N}"),
    ({"sim_time": -1.0}, "s.sim_time", "> 0"),
    ({"sim_time": math.nan}, "s.sim_time", "finite"),
    ({"first": "yes"}, "s.first", "true or false"),
    ({"first": False}, "s", "captures something"),
    ({"any": [{"every": 2}, {"at": "x"}]}, "s.any[1].at", "non-empty list"),
    ({}, "s", "every: N"),
    ([1, 2], "s", "every: N"),
])
def test_parse_schedule_rejects_with_key_and_forms(spec, key, fragment):
    with pytest.raises(ScenarioError) as info:
        parse_schedule(spec, key="s")
    assert info.value.key == key
    assert fragment in info.value.message
