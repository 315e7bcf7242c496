"""A recorder's streams: a scenario's stream forms, for values a loop passes by name."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from simkit.errors import ScenarioError
from simkit.io import schema
from simkit.schedule import AbstractSchedule
from simkit.schedule import parse_stream as parse
from simkit.solver._summaries import Summary, parse_summaries

#: A value, probe or stream name: what a netCDF name may hold, at most 240 characters (255
#: with a summary's suffix such as ``_histogram``); ``\Z``, not ``$``, which matches before a
#: trailing newline.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,239}\Z")
_RESERVED = (schema.STEP, schema.TIME, schema.CHECKSUM)


@dataclass(frozen=True)
class RecordStream:
    """One stream of a recorder: its schedule and the values it keeps (``fields`` in their own
    dtype, ``diagnostics`` as float64, ``summaries`` computed on the device). With
    ``everything`` (no ``fields`` or ``diagnostics`` given, as a scenario stream keeps every
    field) the fields are every value the first ``step`` passes (a stage's stream: every probe
    of its stage), fixed by the recorder then."""

    name: str
    schedule: AbstractSchedule
    fields: tuple[str, ...]
    diagnostics: tuple[str, ...]
    stage: str | None = None
    summaries: tuple[Summary, ...] = ()
    everything: bool = False

    @cached_property
    def kept(self) -> tuple[str, ...]:
        """The values a capture copies as they are: the fields, then the diagnostics."""
        return self.fields + self.diagnostics

    @cached_property
    def values(self) -> tuple[str, ...]:
        """Every value the loop must pass for a capture (summaries read their field)."""
        return tuple(dict.fromkeys(self.fields + self.diagnostics
                                   + tuple(s.field for s in self.summaries)))

    def keeping(self, given: Mapping[str, Any], step: int) -> RecordStream:
        """This stream keeping every value of ``given`` (a stream that keeps everything, at the
        first step that gives it values).

        Raises:
            ScenarioError: ``given`` is empty, or names a value twice.
        """
        if not given:
            what = ("every value the first step passes" if self.stage is None
                    else f"every probe of stage {self.stage!r}")
            raise ScenarioError(f"expected values to keep (a stream without fields or "
                                f"diagnostics keeps {what}), given none at step {step}",
                                key=f"outputs.{self.name}")
        return _check_once(replace(
            self, fields=_name_list(list(given), f"outputs.{self.name}.fields"), everything=False))


def _name_list(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and NAME.match(v)
                                              for v in value):
        raise ScenarioError(f"expected a list of value names (letters, digits and _, at most "
                            f"240 characters), given {value!r}", key=key)
    return tuple(dict.fromkeys(value))


def parse_stream(name: Any, spec: Any) -> RecordStream:
    """A recorder stream from the same data as a scenario's ``outputs`` entry.

    Raises:
        ScenarioError: naming the key path, what was expected and what was given.
    """
    key = f"outputs.{name}"
    if not isinstance(name, str) or not NAME.match(name) or name in _RESERVED:
        raise ScenarioError(f"expected a stream name of letters, digits and _, at most 240 "
                            f"characters (not step or time), given {name!r}", key=key)
    stream = parse(name, spec, key, names=lambda value, at, what: _name_list(value, at))
    fields, diagnostics = _listed(stream.fields), _listed(stream.diagnostics)
    summaries = (parse_summaries(spec["summaries"], f"{key}.summaries")
                 if "summaries" in spec else ())
    everything = stream.fields is None and stream.diagnostics is None
    if not everything and not fields and not diagnostics and not summaries:
        raise ScenarioError("expected at least one field, diagnostic or summary to capture, "
                            "given none", key=key)
    _check_schedule(stream.schedule, stream.stage, key)
    return _check_once(RecordStream(name, stream.schedule, fields, diagnostics, stream.stage,
                                    summaries, everything))


def _check_schedule(schedule: AbstractSchedule, stage: str | None, key: str) -> None:
    """Refuse what a loop cannot give: a condition on a stage's state (a run's form), and a
    stage capture on anything but steps known in advance (or the last)."""
    for member in schedule.members():
        condition = member.edge or member.level
        if condition is not None and condition.stage is not None:
            raise ScenarioError("expected a condition on a value the loop passes, given one on "
                                f"stage {condition.stage!r} (a scenario run's form)",
                                key=f"{key}.{member.kind}.stage")
    if stage is not None:
        for member in schedule.members():
            if not member.steps_known:
                raise ScenarioError("expected a step schedule (every, at, logspace, first, last, window) "
                                    f"for a stage capture, given {member.kind}",
                                    key=f"{key}.stage")


def _listed(names: tuple[str, ...] | str | None) -> tuple[str, ...]:
    """The names a stream keeps (its ``names`` check lists them: never ``"all"`` here)."""
    return (names,) if isinstance(names, str) else names or ()


def _check_once(stream: RecordStream) -> RecordStream:
    names = stream.fields + stream.diagnostics + tuple(s.name for s in stream.summaries)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ScenarioError(f"expected each value once per stream, given {twice[0]!r} as field, "
                            "diagnostic or summary at once", key=f"outputs.{stream.name}")
    return stream
