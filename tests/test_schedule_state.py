"""Schedules carry their own state (cooldowns, deadlines, a union's members) through save and
restore, under the names checkpoints hold."""

from __future__ import annotations

import pytest

from simkit.schedule import AnyOf, Every, WallTime, When, parse_schedule


def test_when_saves_and_restores_its_cooldown():
    when = When("value", above=0.9, cooldown=70)
    state = when.init_state()
    assert state.save() == {"cooldown_until": 0} and state.may_fire(0)
    state.fired(137)
    assert not state.may_fire(207) and state.may_fire(208) and state.resumes_at == 208
    again = When("value", above=0.9, cooldown=70)
    resumed = again.init_state()
    resumed.restore(state.save())
    assert resumed.save() == {"cooldown_until": 208} and not resumed.may_fire(200)
    resumed.reset()
    assert resumed.may_fire(200)
    assert again == when  # the state is not part of the value


def test_wall_time_saves_seconds_left_on_a_fake_clock():
    now = [100.0]
    wall = WallTime(5.0, clock=lambda: now[0])
    state = wall.init_state()
    state.reset()
    now[0] = 103.0
    assert not state.due() and state.seconds_left() == 2.0
    saved = state.save()
    assert saved == {"seconds_left": 2.0}
    later = [1000.0]
    resumed = WallTime(5.0, clock=lambda: later[0]).init_state()
    resumed.restore(saved)
    later[0] = 1001.5
    assert not resumed.due()
    later[0] = 1002.0
    assert resumed.due()
    resumed.fired()
    assert resumed.seconds_left() == 5.0


def test_union_state_names_its_members_and_restore_checks_names():
    schedule = parse_schedule({"every": 10, "when": {"diagnostic": "v", "above": 1.0,
                                                     "cooldown": 3}})
    assert isinstance(schedule, AnyOf)
    state = schedule.init_state()
    assert state.save() == {"1.cooldown_until": 0}
    state.member(1).fired(5)
    assert state.save() == {"1.cooldown_until": 9}
    assert Every(3).init_state().save() == {}
    with pytest.raises(ValueError, match=r"expected the saved state \['1.cooldown_until'\], "
                                         r"given \['0.cooldown_until'\]"):
        state.restore({"0.cooldown_until": 1})
