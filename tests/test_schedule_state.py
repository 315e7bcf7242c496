"""Schedules carry their own state (cooldowns, deadlines, a union's members) through save and
restore, under the names checkpoints hold."""

from __future__ import annotations

import pytest

from simkit.schedule import AnyOf, Every, WallTime, When, parse_schedule


def test_when_saves_and_restores_its_cooldown():
    when = When("value", above=0.9, cooldown=70)
    assert when.save() == {"cooldown_until": 0} and when.may_fire(0)
    when.fired(137)
    assert not when.may_fire(207) and when.may_fire(208) and when.resumes_at == 208
    again = When("value", above=0.9, cooldown=70)
    again.restore(when.save())
    assert again.save() == {"cooldown_until": 208} and not again.may_fire(200)
    again.reset()
    assert again.may_fire(200)
    assert again == when  # the state is not part of the value


def test_wall_time_saves_seconds_left_on_a_fake_clock():
    now = [100.0]
    wall = WallTime(5.0, clock=lambda: now[0])
    wall.reset()
    now[0] = 103.0
    assert not wall.due() and wall.seconds_left() == 2.0
    saved = wall.save()
    assert saved == {"seconds_left": 2.0}
    later = [1000.0]
    resumed = WallTime(5.0, clock=lambda: later[0])
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
    assert schedule.save() == {"1.cooldown_until": 0}
    schedule.members[1].fired(5)
    assert schedule.save() == {"1.cooldown_until": 9}
    assert Every(3).save() == {}
    with pytest.raises(ValueError, match=r"expected the saved state \['1.cooldown_until'\], "
                                         r"given \['0.cooldown_until'\]"):
        schedule.restore({"0.cooldown_until": 1})


