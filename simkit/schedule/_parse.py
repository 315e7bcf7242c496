"""``parse_schedule``: the one way scenario data becomes a schedule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simkit.errors import ScenarioError, did_you_mean
from simkit.schedule._base import AbstractSchedule, AnyOf
from simkit.schedule._kinds import (
    At,
    Every,
    First,
    Last,
    LogSpaced,
    SimTime,
    WallTime,
    When,
    While,
)

VALID_FORMS = (
    "every: N [offset: K]",
    "at: [2, 5, 8]",
    "logspace: {start: 1, stop: 1000, num: 4}",
    "sim_time: T [start: T0]",
    "first: true",
    "last: true",
    "wall_time: SECONDS",
    "when: {diagnostic: D, above|below: X [, cooldown: N]}",
    "while: {diagnostic: D, above|below: X [, every: N]}",
    "any: [<schedule>, ...]",
)
SCHEDULE_KEYS = ("every", "offset", "at", "logspace", "sim_time", "start", "first", "last",
                 "wall_time", "when", "while", "any")
_WHEN_KEYS = ("diagnostic", "above", "below", "cooldown", "stage")
_WHILE_KEYS = ("diagnostic", "above", "below", "every", "stage")
_MODIFIERS = {"offset": "every", "start": "sim_time"}


def _forms() -> str:
    return "; ".join(VALID_FORMS)


def parse_schedule(spec: Any, key: str = "schedule") -> AbstractSchedule:
    """Build a schedule from scenario data.

    Several schedule keys in one mapping make a union, e.g. ``{every: 100, last: true}``.

    Args:
        spec: a mapping in one of the forms of ``VALID_FORMS``.
        key: the key path of ``spec`` in the scenario, used in error messages.

    Returns:
        The schedule.

    Raises:
        ScenarioError: naming the key, the valid forms and the value given.
    """
    if not isinstance(spec, Mapping) or not spec:
        raise ScenarioError(f"expected a schedule ({_forms()}), given {spec!r}", key=key)
    for name in spec:
        if name not in SCHEDULE_KEYS:
            raise ScenarioError(
                f"unknown schedule key{did_you_mean(str(name), SCHEDULE_KEYS)}; expected one of "
                f"{_forms()}, given {name!r}", key=f"{key}.{name}")
    for modifier, owner in _MODIFIERS.items():
        if modifier in spec and owner not in spec:
            raise ScenarioError(f"expected {modifier!r} only together with {owner!r}, given "
                                f"{modifier}: {spec[modifier]!r} alone", key=f"{key}.{modifier}")
    members: list[AbstractSchedule] = []
    try:
        for name, value in spec.items():
            if name in _MODIFIERS:
                continue
            members.extend(_parse_one(name, value, spec, f"{key}.{name}"))
    except ScenarioError as error:
        if error.key and error.key != key and not error.key.startswith(key + "."):
            raise ScenarioError(error.message, key=f"{key}.{error.key}") from None
        raise
    if any(isinstance(m, While) for m in members) and len(members) > 1:
        raise ScenarioError("expected 'while' alone in its stream (its condition gates every "
                            "capture of the stream): put the other schedules in a stream of "
                            f"their own, given {', '.join(map(str, spec))}", key=key)
    if not members:
        raise ScenarioError(f"expected a schedule that captures something ({_forms()}), "
                            f"given {dict(spec)!r}", key=key)
    return members[0] if len(members) == 1 else AnyOf(tuple(members))


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"expected true or false, given {value!r}", key=key)
    return value


#: Per condition form: the schedule, its keys, its shape as said in errors, its defaults.
_CONDITIONS: dict[str, tuple[type, tuple[str, ...], str, dict[str, Any]]] = {
    "when": (When, _WHEN_KEYS, "{diagnostic: D, above|below: X}", {}),
    "while": (While, _WHILE_KEYS, "{diagnostic: D, above|below: X [, every: N, stage: S]}",
              {"every": 1}),
}


def parse_condition(form: str, value: Any, key: str) -> When | While:
    """A ``when`` or ``while`` condition from its mapping ``value`` at ``key``, every error said
    of the key inside it that is wrong (``outputs.hot.while.every``, ``stop_when.cooldown``).

    Raises:
        ScenarioError: for a value that is not a mapping, an unknown key or a bad value.
    """
    kind, keys, shape, defaults = _CONDITIONS[form]
    if not isinstance(value, Mapping):
        raise ScenarioError(f"expected {shape}, given {value!r}", key=key)
    for item in value:
        if item not in keys:
            raise ScenarioError(f"unknown key{did_you_mean(str(item), keys)}; expected one of "
                                f"{', '.join(keys)}, given {item!r}", key=f"{key}.{item}")
    try:
        return kind(**{**defaults, **value})
    except ScenarioError as error:
        inner = str(error.key or "")
        if inner == form or inner.startswith(form + "."):  # the schedule names itself
            inner = inner.removeprefix(form).lstrip(".")
        raise ScenarioError(error.message, key=f"{key}.{inner}" if inner else key) from None


def _parse_one(name: str, value: Any, spec: Mapping, key: str) -> list[AbstractSchedule]:
    if name == "every":
        return [Every(value, spec.get("offset", 0))]
    if name == "at":
        return [At(value)]
    if name == "logspace":
        if isinstance(value, (list, tuple)) and len(value) == 3:
            return [LogSpaced(*value)]
        if isinstance(value, Mapping) and set(value) == {"start", "stop", "num"}:
            return [LogSpaced(value["start"], value["stop"], value["num"])]
        raise ScenarioError(f"expected {{start: S, stop: E, num: N}} or [S, E, N], given {value!r}",
                            key=key)
    if name == "sim_time":
        return [SimTime(value, spec.get("start", 0.0))]
    if name == "first":
        return [First()] if _flag(value, key) else []
    if name == "last":
        return [Last()] if _flag(value, key) else []
    if name == "wall_time":
        return [WallTime(value)]
    if name in _CONDITIONS:
        return [parse_condition(name, value, key)]
    if name == "any":
        if not isinstance(value, (list, tuple)) or not value:
            raise ScenarioError(f"expected a non-empty list of schedules, given {value!r}", key=key)
        return [parse_schedule(item, f"{key}[{i}]") for i, item in enumerate(value)]
    raise AssertionError(name)  # unreachable: keys are checked by parse_schedule
