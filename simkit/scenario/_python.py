"""Streams and schedules given as Python objects in scenario data (``simkit.Stream(every=10)``,
``simkit.When("energy", above=0.5)``), written as the mappings a scenario file holds: a plan is
then checked, recorded in its file and resumed the same whichever way a stream was given."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from simkit.errors import ScenarioError
from simkit.scenario._overrides import _plain
from simkit.schedule import STREAM_KEYS, AbstractSchedule, Stream, parse_schedule


def _given(member: AbstractSchedule, item: dataclasses.Field[Any]) -> bool:
    """Whether ``item`` of ``member`` differs from its default (a required one always does)."""
    return (item.default is dataclasses.MISSING
            or bool(getattr(member, item.name) != item.default))


def _member(member: AbstractSchedule) -> dict[str, Any]:
    """A schedule that is not a union as the keys of a stream mapping: its kind's key with its
    value (the mapping of its ``keys``, its one field, a mapping of its fields, or true for a
    flag) and its modifiers (``every``'s ``offset``) beside it."""
    kind = type(member)
    items = [f for f in dataclasses.fields(member)  # type: ignore[arg-type]
             if f.init and f.compare]
    if kind.keys:  # in the order of its keys, as a file says them
        named = {f.name: f for f in items}
        return {kind.kind: {name: getattr(member, name) for name in kind.keys
                            if name in named and _given(member, named[name])}}
    own = [f for f in items if f.name not in kind.modifiers]
    value: Any = True
    if len(own) == 1:
        value = getattr(member, own[0].name)
    elif own:
        value = {f.name: getattr(member, f.name) for f in own}
    return {kind.kind: value, **{f.name: getattr(member, f.name) for f in items
                                 if f.name in kind.modifiers and _given(member, f)}}


def schedule_mapping(schedule: AbstractSchedule, key: str) -> dict[str, Any]:
    """``schedule`` as a stream's schedule keys (``{every: 10, last: true}``; a union of two of
    one kind as ``any``), which ``parse_schedule`` reads back as an equal schedule.

    Raises:
        ScenarioError: at ``key``, for a schedule no mapping says.
    """
    try:
        parts = [_member(m) for m in schedule.members()]
    except TypeError:  # not a dataclass: no fields to write
        parts = []
    spec: dict[str, Any] = {}
    for part in parts:
        if spec.keys() & part.keys():
            spec = {"any": parts}
            break
        spec.update(part)
    spec = _plain(spec)
    try:
        same = bool(spec) and parse_schedule(spec, key) == schedule
    except ScenarioError:
        same = False
    if not same:
        raise ScenarioError(f"expected a schedule a scenario can say as a mapping, given "
                            f"{schedule!r}", key=key)
    return spec


def stream_mapping(value: Any, key: str) -> Any:
    """A ``Stream`` (or a bare schedule, a stream keeping every field) as the mapping a scenario
    file holds; anything else as it is."""
    if isinstance(value, AbstractSchedule):
        return schedule_mapping(value, key)
    if not isinstance(value, Stream):
        return value
    spec = schedule_mapping(value.schedule, key)
    for name in STREAM_KEYS:
        if name in value.model_fields_set and getattr(value, name) is not None:
            spec[name] = _plain(getattr(value, name))
    spec.update(_plain(value.extra))
    return spec


def streams_as_mappings(value: Any, key: str) -> Any:
    """The streams of ``outputs`` or ``gradients`` (at ``key``), each as a mapping."""
    if not isinstance(value, Mapping):
        return value
    return {name: stream_mapping(spec, f"{key}.{name}") for name, spec in value.items()}


def condition_mapping(value: Any, key: str) -> Any:
    """An edge condition (``When``) as its mapping (``{diagnostic, above|below, ...}``), as
    ``stop_when`` holds it; anything else as it is."""
    if isinstance(value, AbstractSchedule) and value.edge is not None:
        return schedule_mapping(value, key)[type(value).kind]
    return value


def objects_as_mappings(data: dict[str, Any]) -> None:
    """Write the streams and the stop condition of scenario ``data`` given as Python objects as
    mappings, in place (before the scenario is validated: errors are said of their keys)."""
    for key in ("outputs", "gradients"):
        if key in data:
            data[key] = streams_as_mappings(data[key], key)
    if "stop_when" in data:
        data["stop_when"] = condition_mapping(data["stop_when"], "stop_when")
