"""Output streams: names, the fields and diagnostics they keep, their schedules, and how many
captures they make."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, cast

from simkit.errors import ScenarioError
from simkit.scenario._model import Scenario, SimkitWarning, StreamPlan, unknown
from simkit.schedule import Condition, When, parse_condition, parse_stream
from simkit.solver import AbstractSolver
from simkit.solver._summaries import parse_summaries

#: Output streams of one run (each a group of the file, written at each of its captures).
MAX_STREAMS = 1000
#: Bytes of a stream's name: a netCDF name has at most 256 (NC_MAX_NAME).
MAX_STREAM_NAME_BYTES = 255

_STREAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


#: Captures above this many bytes in one stream draw a warning.
LARGE_STREAM_BYTES = 1 << 30


#: Captures one stream may make in a run: each is a row of the file and a call into the writer.
MAX_CAPTURES = 2**40


def _names(value: Any, valid: Sequence[str], key: str, what: str) -> tuple[str, ...]:
    if value == "all":
        return tuple(valid)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        hint = (" (YAML reads unquoted on, off, yes and no as true or false: quote such a name)"
                if isinstance(value, bool) or (isinstance(value, list)
                                               and any(isinstance(v, bool) for v in value))
                else "")
        raise ScenarioError(f"expected a list of {what} names or 'all', given {value!r}{hint}",
                            key=key)
    for name in value:
        if name not in valid:
            raise unknown(what, name, valid, key, some=True)
    return tuple(dict.fromkeys(value))


def _check_scalar(solver: AbstractSolver, diagnostic: str, key: str) -> None:
    """A condition compares one value with a threshold: refuse a vector diagnostic."""
    dims = {d.name: d.dims for d in solver.diagnostics()}
    if dims[diagnostic]:
        scalars = [name for name, d in dims.items() if not d]
        raise ScenarioError(f"expected a scalar diagnostic ({', '.join(scalars)}), given "
                            f"{diagnostic!r} with dimensions {dims[diagnostic]}", key=key)


def _check_stream_name(name: Any, key: str) -> None:
    if not isinstance(name, str) or not _STREAM_NAME.fullmatch(name):
        raise ScenarioError(f"expected a stream name of letters, digits and _, given {name!r}",
                            key=key)
    if len(name) > MAX_STREAM_NAME_BYTES:
        raise ScenarioError(f"expected a stream name of at most {MAX_STREAM_NAME_BYTES} "
                            f"characters (a netCDF name's limit), given one of {len(name)}",
                            key=key)


def _check_stream_count(scenario: Scenario) -> None:
    """Refuse more streams than a run can keep cheaply (each is a group of the file and a write
    at each of its captures), before anything is done per stream."""
    count = len(scenario.outputs) + len(scenario.gradients or {})
    if count > MAX_STREAMS:
        raise ScenarioError(f"expected at most {MAX_STREAMS} streams (outputs and gradients "
                            f"together), given {count}; keep several fields or diagnostics in "
                            "one stream instead",
                            key="outputs" if len(scenario.outputs) > MAX_STREAMS else "gradients")
    for name in scenario.gradients or {}:
        _check_stream_name(name, f"gradients.{name}")


def _capturable(solver: AbstractSolver, name: str, spec: Mapping[str, Any], key: str
                ) -> list[str]:
    """What the stream ``name`` (at ``key``) may keep as fields: the solver's fields, and the
    probes of the stages up to its ``stage``; refuses a name the file's variables have and a
    stage the solver has not."""
    field_names = [f.name for f in solver.fields()]
    taken = [*field_names, *(c.name for c in solver.coordinates()), "step", "time"]
    if name in taken:
        raise ScenarioError(f"expected a stream name other than the file's variables "
                            f"({', '.join(taken)}), given {name!r}", key=key)
    stage = spec.get("stage")
    capturable = list(field_names)
    if stage is not None:
        stages = list(solver.stages())
        stage_names = [s.name for s in stages]
        if stage not in stage_names:
            raise unknown("stage", stage, stage_names, f"{key}.stage")
        for s in stages[: stage_names.index(stage) + 1]:
            capturable.extend(p.name for p in s.probes)
    return capturable


def _keeps(spec: Mapping[str, Any], capturable: list[str], solver: AbstractSolver, key: str
           ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """What the stream at ``key`` keeps: its fields (every field where it names neither fields
    nor diagnostics), the diagnostics it names, and those with its summaries'."""
    diag_names = [d.name for d in solver.diagnostics()]
    has_names = "fields" in spec or "diagnostics" in spec
    fields = _names(spec.get("fields", [] if has_names else [f.name for f in solver.fields()]),
                    capturable, f"{key}.fields", "field")
    named = _names(spec.get("diagnostics", []), diag_names, f"{key}.diagnostics", "diagnostic")
    diagnostics = named
    if "summaries" in spec:
        summaries = parse_summaries(spec["summaries"], f"{key}.summaries")
        for summary in summaries:
            if summary.field not in capturable:
                raise unknown("field", summary.field, capturable, f"{key}.summaries")
        diagnostics = tuple(dict.fromkeys(named + tuple(s.name for s in summaries)))
    if not fields and not diagnostics:
        raise ScenarioError("expected at least one field or diagnostic to capture, given none",
                            key=key)
    return fields, named, diagnostics


def _stream(name: Any, spec: Any, solver: AbstractSolver) -> StreamPlan:
    """The output stream ``name`` of the scenario, checked against ``solver``: what it keeps
    first, then its schedule (``parse_stream``), then the conditions its schedule asks."""
    key = f"outputs.{name}"
    _check_stream_name(name, key)
    if not isinstance(spec, Mapping):
        parse_stream(name, spec, key)  # refuses it, saying what a stream is
    capturable = _capturable(solver, name, spec, key)
    fields, named, diagnostics = _keeps(spec, capturable, solver, key)
    kept = {"field": fields, "diagnostic": named}
    stream = parse_stream(name, spec, key, names=lambda value, at, what: kept[what])
    for member in stream.schedule.members():
        if member.edge is not None:
            _check_condition(solver, member.edge, f"{key}.when")
        if member.level is not None:
            _check_condition(solver, member.level, f"{key}.while")
    return StreamPlan(name, stream.schedule, fields, diagnostics, stream.stage)


def _check_stage(solver: AbstractSolver, stage: str | None, key: str) -> None:
    """A condition taken after a stage names one of the solver's stages."""
    stage_names = [s.name for s in solver.stages()]
    if stage is not None and stage not in stage_names:
        raise unknown("stage", stage, stage_names, key)


def _check_condition(solver: AbstractSolver, condition: Condition, key: str) -> None:
    """A condition (at ``key``) looks at one of the solver's scalar diagnostics, after one of its
    stages if it names one."""
    diag_names = [d.name for d in solver.diagnostics()]
    if condition.diagnostic not in diag_names:
        raise unknown("diagnostic", condition.diagnostic, diag_names, f"{key}.diagnostic")
    _check_scalar(solver, condition.diagnostic, f"{key}.diagnostic")
    _check_stage(solver, condition.stage, f"{key}.stage")


def _stop_when(scenario: Scenario, solver: AbstractSolver) -> When | None:
    """The edge condition that ends the run early (``stop_when``), or None."""
    if scenario.stop_when is None:
        return None
    stop_when = cast(When, parse_condition("when", scenario.stop_when, "stop_when"))
    condition = stop_when.edge
    assert condition is not None  # a `when` is an edge condition
    _check_condition(solver, condition, "stop_when")
    return stop_when


def _end_time(scenario: Scenario, steps: int, dt: float) -> float:
    """The simulated time a run of at most ``steps`` steps of ``dt`` ends at, at the latest."""
    return scenario.until if scenario.until is not None else steps * dt


def _check_stream_fires(stream: StreamPlan, scenario: Scenario, steps: int, dt: float) -> None:
    schedule = stream.schedule
    # A condition or the wall clock may capture at any step: only the run can tell.
    if schedule.at_end or any(m.edge is not None or m.wall_clock is not None
                              for m in schedule.members()):
        return
    first_step = schedule.next_step(-1)
    first_time = schedule.next_time(-math.inf)
    end_time = _end_time(scenario, steps, dt)
    by_step = first_step is not None and (scenario.steps is None or first_step <= scenario.steps)
    by_time = first_time is not None and first_time <= end_time * (1 + 1e-12)
    if not (by_step or by_time):
        length = (f"{scenario.steps} steps" if scenario.steps is not None
                  else f"until time {scenario.until}")
        raise ScenarioError(f"expected a schedule that captures within the run ({length}), "
                            "given one that captures nothing", key=f"outputs.{stream.name}")


def _check_capture_count(stream: StreamPlan, scenario: Scenario, steps: int, dt: float) -> None:
    end_time = _end_time(scenario, steps, dt)
    count = stream.schedule.count(steps, end_time)
    if count > MAX_CAPTURES:
        raise ScenarioError(f"expected at most {MAX_CAPTURES} captures in one stream, given a "
                            f"schedule making about {count:.3g}", key=f"outputs.{stream.name}")
    if scenario.steps is None:
        return
    # Explicit steps past the end are dropped: say so, a shortened run (--set steps=...) is
    # legal but a typo in `at` should not pass unnoticed.
    beyond = stream.schedule.beyond(steps)
    if beyond:
        shown = ", ".join(map(str, beyond[:5])) + (", ..." if len(beyond) > 5 else "")
        warnings.warn(f"outputs.{stream.name}: steps {shown} come after the run's last step "
                      f"({steps}) and will not be captured", SimkitWarning, stacklevel=4)


def _warn_questionable(scenario: Scenario, solver: AbstractSolver, streams: tuple[StreamPlan, ...],
                       dt: float, steps: int) -> None:
    end = _end_time(scenario, steps, dt)
    if scenario.dtype == "float32" and end > 0 and dt / end < 1e-6:
        warnings.warn(f"dt = {dt:g} is below 1e-6 of the run's length ({end:g}) in float32: "
                      "increments may vanish in round-off; consider float64", SimkitWarning,
                      stacklevel=4)
    sizes = {c.name: len(c.values) for c in solver.coordinates()}
    itemsize = 4 if scenario.dtype == "float32" else 8
    field_bytes = {f.name: math.prod(sizes[d] for d in f.dims) * itemsize
                   for f in solver.fields()}
    for stream in streams:
        per_capture = sum(field_bytes.get(name, 0) for name in stream.fields)
        total = per_capture * stream.schedule.count(steps, end)
        if total > LARGE_STREAM_BYTES:
            warnings.warn(f"outputs.{stream.name} will write about {total / 2**30:.1f} GiB; "
                          "capture less often or fewer fields if that is not intended",
                          SimkitWarning, stacklevel=4)
