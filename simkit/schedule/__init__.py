"""Schedules: which steps of a run a stream captures (pure Python, no arrays).

A schedule is configuration (frozen, equal by value); a run holds each schedule's
``ScheduleState`` (``init_state``) and asks ``due`` on the host, or plans its compiled blocks
from ``next_step``, ``next_time``, ``fires`` and what the schedule says it is (``known_in_advance``,
``edge``, ``level``, ``wall_clock``, ...).
"""

from simkit.schedule import _kinds
from simkit.schedule._base import (
    KINDS,
    TIME_RTOL,
    AbstractSchedule,
    AnyOf,
    Condition,
    ValueOf,
)
from simkit.schedule._kinds import *  # noqa: F403 - every kind, as the registry has them
from simkit.schedule._parse import SCHEDULE_KEYS, VALID_FORMS, parse_condition, parse_schedule
from simkit.schedule._spec import (
    STREAM_KEYS,
    Stream,
    parse_stream,
    schedule_json_schema,
    stream_json_schema,
)
from simkit.schedule._state import ClockState, EdgeState, ScheduleState, UnionState

__all__ = [
    *_kinds.__all__,
    "KINDS",
    "TIME_RTOL",
    "AbstractSchedule",
    "AnyOf",
    "ClockState",
    "Condition",
    "EdgeState",
    "STREAM_KEYS",
    "Stream",
    "ScheduleState",
    "UnionState",
    "ValueOf",
    "SCHEDULE_KEYS",
    "VALID_FORMS",
    "parse_condition",
    "parse_schedule",
    "parse_stream",
    "schedule_json_schema",
    "stream_json_schema",
]
