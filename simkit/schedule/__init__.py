"""Schedules: which steps of a run a stream captures (pure Python, no arrays)."""

from simkit.schedule._base import TIME_RTOL, AbstractSchedule, AnyOf, members
from simkit.schedule._kinds import (
    MAX_STEP,
    At,
    Every,
    First,
    Last,
    LogSpaced,
    SimTime,
    WallTime,
    When,
    While,
    fixed_in_steps,
)
from simkit.schedule._parse import SCHEDULE_KEYS, VALID_FORMS, parse_condition, parse_schedule

__all__ = [
    "MAX_STEP",
    "TIME_RTOL",
    "AbstractSchedule",
    "AnyOf",
    "At",
    "Every",
    "First",
    "Last",
    "LogSpaced",
    "SimTime",
    "WallTime",
    "When",
    "While",
    "fixed_in_steps",
    "members",
    "SCHEDULE_KEYS",
    "VALID_FORMS",
    "parse_condition",
    "parse_schedule",
]
