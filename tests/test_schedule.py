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
    Condition,
    Every,
    First,
    Last,
    LogSpaced,
    SimTime,
    WallTime,
    When,
    While,
    Window,
    parse_schedule,
)

HORIZON = 400

every = st.builds(Every, st.integers(1, 60), st.integers(0, 80))
at = st.builds(At, st.lists(st.integers(0, HORIZON + 20), min_size=1, max_size=12))
logspaced = st.integers(1, 50).flatmap(
    lambda start: st.builds(LogSpaced, st.just(start), st.integers(start, HORIZON + 50),
                            st.integers(1, 30)))
first = st.just(First())
window = st.integers(0, HORIZON).flatmap(
    lambda start: st.builds(Window, st.just(start), st.integers(start, HORIZON + 50),
                            st.integers(1, 40)))
step_schedules = st.one_of(every, at, logspaced, first, window)
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


# ------------------------------------------------------------------ the protocol

def _reference_count(schedule, steps, end_time):
    """The capture count as a closed form per kind, summed over a union's members."""
    def one(m):
        if isinstance(m, While):  # a level condition's candidates count as its steps
            return steps // m.every + 1
        if isinstance(m, Every):
            return 0 if steps < m.offset else (steps - m.offset) // m.every + 1
        if isinstance(m, (At, LogSpaced)):
            return sum(1 for s in m.steps if s <= steps)
        if isinstance(m, First):
            return 1
        if isinstance(m, Window):
            return len(range(m.start, min(m.stop, steps) + 1, m.every))
        if isinstance(m, SimTime):
            span = end_time * (1 + 1e-12) - m.start
            return 0 if span < 0 else math.floor(span / m.interval) + 1
        return 0
    parts = schedule.members()
    by_step = sum(one(m) for m in parts if not isinstance(m, SimTime))
    by_time = sum(one(m) for m in parts if isinstance(m, SimTime))
    return min(by_step, steps + 1) + by_time + int(schedule.at_end)


whiles = st.builds(lambda n: While("e", above=0.5, every=n), st.integers(1, 9))
others = st.one_of(st.builds(SimTime, st.floats(0.1, 5.0), st.floats(0.0, 3.0)), st.just(Last()),
                   st.just(When("e", below=1.0, cooldown=2)), st.just(WallTime(3.0)), whiles)
any_member = st.one_of(step_schedules, others)
any_schedule = st.one_of(any_member, st.lists(any_member, min_size=1, max_size=4).map(
    lambda m: AnyOf(tuple(m))))


@given(any_schedule, st.integers(0, HORIZON), st.floats(0.0, 100.0))
def test_count_is_the_closed_form_per_kind(schedule, steps, end_time):
    assert schedule.count(steps, end_time) == _reference_count(schedule, steps, end_time)


@given(any_schedule, st.integers(0, HORIZON))
def test_beyond_lists_the_explicit_steps_after_the_end(schedule, steps):
    listed = {s for m in schedule.members() if isinstance(m, (At, LogSpaced)) for s in m.steps}
    assert schedule.beyond(steps) == tuple(sorted(s for s in listed if s > steps))


@given(step_schedules)
def test_known_in_advance_schedules_are_due_where_they_fire(schedule):
    state = schedule.init_state()
    assert schedule.known_in_advance and state.save() == {}
    assert [s for s in range(HORIZON + 1) if schedule.due(state, s, float(s), None)] == \
        scan(schedule)


def test_what_each_kind_says_it_is():
    when, wall, level = When("e", above=1.0, stage="kick"), WallTime(2.0), While("e", below=0)
    assert Every(1).every_step and level.every_step and not Every(2).every_step
    assert [s.known_in_advance for s in (Every(2), At((1,)), LogSpaced(1, 9, 2), First())] == \
        [True] * 4
    assert not any(s.known_in_advance for s in (Last(), SimTime(1.0), when, wall, level))
    assert when.edge == Condition("e", 1.0, None, "kick") and when.level is None
    assert level.level == Condition("e", None, 0, None) and level.edge is None
    assert wall.wall_clock == 2.0 and when.wall_clock is None
    assert when.edge.key == ("e", 1.0, None, "kick") and when.edge.holds(1.5)
    assert not Condition("e", below=0.0).holds(0.0) and Condition("e", below=0.0).holds(-1e-9)
    union = AnyOf((Every(3), when))
    assert union.members() == (Every(3), when) and Every(3).members() == (Every(3),)
    assert union.members() == union.members and not union.known_in_advance
    assert (Every(3) | At((2,))).known_in_advance
    assert {Every(3): 1}[Every(3)] == 1 and hash(when) == hash(When("e", above=1.0, stage="kick"))
    assert [w.kind for w in (Every(1), At((1,)), when, wall, level, union)] == \
        ["every", "at", "when", "wall_time", "while", "any"]


def test_when_due_is_edge_triggered_with_cooldown():
    when = When("e", above=0.5, cooldown=2)
    state = when.init_state()
    values = [0.9, 0.1, 0.9, 0.1, 0.9, 0.9, 0.1, 0.9, 0.1, 0.9]
    fired = [s for s, v in enumerate(values) if when.due(state, s, float(s), lambda c, v=v: v)]
    # The initial state never fires; steps 4 and 9 are within the cooldowns of 2 and 7.
    assert fired == [2, 7]
    assert state.save() == {"cooldown_until": 10} and state.resumes_at == 10
    again = when.init_state()
    again.restore(state.save())
    assert again.save() == state.save() and not again.may_fire(9) and again.may_fire(10)


def test_states_are_per_run_and_save_the_same_names():
    when = When("e", above=0.5, cooldown=3, stage="kick")
    first, second = when.init_state(), when.init_state()
    first.fired(4)
    first.hold(True)
    assert first.save() == {"cooldown_until": 8, "held": 1} and first.held
    assert second.save() == {"cooldown_until": 0, "held": 0} and not second.held
    union = parse_schedule({"every": 10, "when": {"diagnostic": "v", "above": 1.0},
                            "wall_time": 5.0})
    now = [0.0]
    union = AnyOf((union.members[0], union.members[1], WallTime(5.0, clock=lambda: now[0])))
    state = union.init_state()
    assert state.member(1).save() == {"cooldown_until": 0}
    assert state.save() == {"1.cooldown_until": 0, "2.seconds_left": 5.0}
    with pytest.raises(ValueError, match=r"AnyOf.restore: expected the saved state"):
        state.restore({"0.cooldown_until": 1})
    with pytest.raises(ValueError, match=r"When.restore: expected the saved state"):
        state.member(1).restore({})


def test_wall_time_due_on_a_fake_clock():
    now = [10.0]
    wall = WallTime(5.0, clock=lambda: now[0])
    state = wall.init_state()
    state.restart()
    assert not wall.due(state, 1, 1.0, None)
    now[0] = 15.0
    assert wall.due(state, 2, 2.0, None) and state.seconds_left() == 5.0
    now[0] = 17.5
    assert state.save() == {"seconds_left": 2.5}


def test_while_due_needs_its_step_and_its_condition():
    level = While("e", above=0.5, every=2)
    state = level.init_state()
    assert level.due(state, 4, 4.0, lambda c: 0.9)
    assert not level.due(state, 5, 5.0, lambda c: 0.9)
    assert not level.due(state, 6, 6.0, lambda c: 0.1)


@pytest.mark.parametrize("spec, key, fragment", [
    ({"when": {"above": 1.0}}, "s.when", "(without diagnostic), given {'above': 1.0}"),
    ({"while": {"below": 1.0}}, "s.while.diagnostic", "expected a diagnostic name, given ''"),
    ({"when": {"diagnostic": "e", "above": 1.0, "cooldwn": 2}}, "s.when.cooldwn",
     'did you mean "cooldown"'),
    ({"when": 3}, "s.when", "expected {diagnostic: D, above|below: X}, given 3"),
])
def test_a_condition_missing_a_key_is_said_of_its_key(spec, key, fragment):
    with pytest.raises(ScenarioError) as info:
        parse_schedule(spec, key="s")
    assert info.value.key == key
    assert fragment in info.value.message


def test_the_due_rule_steps_known_and_may_fire_are_the_schedules():
    assert Last().fires_at(7, 0.7, final=True) and not Last().fires_at(7, 0.7, final=False)
    assert Every(5).fires_at(10, 1.0, final=False)
    assert (Every(5) | Last() | At((3,))).steps_known
    assert not (Every(5) | When("e", above=1.0)).steps_known
    assert not SimTime(0.5).steps_known and not WallTime(1.0).steps_known
    now = [0.0]
    union = Every(4) | When("e", above=1.0) | WallTime(2.0, clock=lambda: now[0])
    state = union.init_state()
    state.reset()
    assert union.may_fire(state, 3, 0.3)  # a condition may hold anywhere
    wall = Every(4) | WallTime(2.0, clock=lambda: now[0])
    state = wall.init_state()
    state.reset()
    assert wall.may_fire(state, 4, 0.4) and not wall.may_fire(state, 3, 0.3)
    now[0] = 2.5
    assert wall.may_fire(state, 3, 0.3)


def test_a_clock_read_before_it_started_stays_unstarted():
    now = [10.0]
    state = WallTime(2.0, clock=lambda: now[0]).init_state()
    assert state.seconds_left() == 2.0 and state.save() == {"seconds_left": 2.0}
    assert state.deadline is None
    now[0] = 20.0
    assert not state.due()  # the first reading starts it
    now[0] = 22.5
    assert state.due() and state.clock_member(0) is state
    with pytest.raises(TypeError):
        state.edge_member(0)


def test_while_is_alone_in_a_union_too():
    level = {"while": {"diagnostic": "e", "above": 1.0}}
    with pytest.raises(ScenarioError, match="expected 'while' alone in its stream"):
        parse_schedule({"any": [level, {"every": 3}]}, "outputs.s")
    assert parse_schedule({"any": [level]}, "outputs.s").level is not None
