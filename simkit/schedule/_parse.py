"""``parse_schedule``: the one way scenario data becomes a schedule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simkit.errors import ScenarioError, did_you_mean
from simkit.schedule import _kinds  # noqa: F401 - defining the kinds registers them
from simkit.schedule._base import KINDS, AbstractSchedule, AnyOf
from simkit.schedule._conditions import When, While, _Conditional

#: A union's key: a list of schedules, any of which fires.
ANY_FORM = "any: [<schedule>, ...]"
VALID_FORMS = (*(kind.form for kind in KINDS.values()), ANY_FORM)
SCHEDULE_KEYS = (*(key for kind in KINDS.values() for key in (kind.kind, *kind.modifiers)), "any")
_MODIFIERS = {name: kind.kind for kind in KINDS.values() for name in kind.modifiers}


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
    flat = [part for member in members for part in member.members()]
    alone = [part.kind for part in flat if part.alone]  # in a union ("any") too
    if alone and len(flat) > 1:
        raise ScenarioError(f"expected {alone[0]!r} alone in its stream (its condition gates every "
                            "capture of the stream): put the other schedules in a stream of "
                            f"their own, given {', '.join(map(str, spec))}", key=key)
    if not members:
        raise ScenarioError(f"expected a schedule that captures something ({_forms()}), "
                            f"given {dict(spec)!r}", key=key)
    return members[0] if len(members) == 1 else AnyOf(tuple(members))


def parse_condition(form: str, value: Any, key: str) -> When | While:
    """A ``when`` or ``while`` condition from its mapping ``value`` at ``key``, every error said
    of the key inside it that is wrong (``outputs.hot.while.every``, ``stop_when.cooldown``).

    Raises:
        ScenarioError: for a value that is not a mapping, an unknown key or a bad value.
    """
    kind = KINDS[form]
    if not issubclass(kind, _Conditional):
        raise ValueError(f"expected a condition's form (when, while), given {form!r}")
    condition = kind.from_mapping(value, key)
    if not isinstance(condition, (When, While)):
        raise ValueError(f"expected a condition's form (when, while), given {form!r}")
    return condition


def _parse_one(name: str, value: Any, spec: Mapping[str, Any], key: str
               ) -> list[AbstractSchedule]:
    if name == "any":
        if not isinstance(value, (list, tuple)) or not value:
            raise ScenarioError(f"expected a non-empty list of schedules, given {value!r}", key=key)
        return [item if isinstance(item, AbstractSchedule) else parse_schedule(item, f"{key}[{i}]")
                for i, item in enumerate(value)]
    if isinstance(value, KINDS[name]):  # built already (the typed spec)
        return [value]
    return KINDS[name].from_spec(value, spec, key)
