"""Streams and schedules given as Python objects in scenario data (``simkit.Stream(every=10)``,
``simkit.When("energy", above=0.5)``), written as the mappings a scenario file holds: a plan is
then checked, recorded in its file and resumed the same whichever way a stream was given."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simkit.errors import ScenarioError
from simkit.scenario._overrides import _plain
from simkit.schedule import STREAM_KEYS, AbstractSchedule, Stream, parse_schedule


def schedule_mapping(schedule: AbstractSchedule, key: str) -> dict[str, Any]:
    """``schedule`` as a stream's schedule keys (``{every: 10, last: true}``; a union of two of
    one kind as ``any``), which ``parse_schedule`` reads back as an equal schedule.

    Raises:
        ScenarioError: at ``key``, for a schedule no mapping says.
    """
    spec: dict[str, Any]
    try:
        spec = schedule.to_spec()
    except ValueError as error:  # a schedule that says why no file can hold it
        raise ScenarioError(str(error), key=key) from None
    except TypeError:  # a schedule of no kind a scenario knows
        spec = {}
    spec = dict(_plain(spec))
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
        return schedule_mapping(value, key)[value.kind]
    return value


def objects_as_mappings(data: dict[str, Any]) -> None:
    """Write the streams and the stop condition of scenario ``data`` given as Python objects as
    mappings, in place (before the scenario is validated: errors are said of their keys)."""
    for key in ("outputs", "gradients"):
        if key in data:
            data[key] = streams_as_mappings(data[key], key)
    if "stop_when" in data:
        data["stop_when"] = condition_mapping(data["stop_when"], "stop_when")
