"""Scenarios: loading a YAML file safely, applying overrides, validating everything, and turning
it into a run plan before anything is computed or written.

Every mistake becomes one ``ScenarioError`` line naming the file, the line, the key path, what was
expected and what was given.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import re
import stat
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simkit.errors import ScenarioError, did_you_mean
from simkit.io.netcdf import check_replaceable
from simkit.schedule import (
    MAX_STEP,
    AbstractSchedule,
    At,
    Every,
    First,
    LogSpaced,
    SimTime,
    WallTime,
    When,
    While,
    members,
    parse_condition,
    parse_schedule,
)
from simkit.solver import AbstractSolver, SolverModel, load_solver
from simkit.solver._extend import Added, extended
from simkit.solver._registry import load_function
from simkit.solver._summaries import Summary, parse_summaries

MAX_FILE_BYTES = 1 << 20
MAX_NODES = 100_000
#: Deeper YAML is refused before anything recurses into it (no scenario needs more than a few).
MAX_DEPTH = 32
#: Seeds are hashed as 32-bit words by the counter-based generators: larger ones would collide.
MAX_SEED = 2**32 - 1
#: Bytes of one path component: the temporary name beside the output adds up to about 90 bytes
#: (host, process, sequence) and a file name may have 255.
MAX_NAME_BYTES = 160
MAX_PATH_BYTES = 4000
#: Output streams of one run (each a group of the file, written at each of its captures).
MAX_STREAMS = 1000
#: Bytes of a stream's name: a netCDF name has at most 256 (NC_MAX_NAME).
MAX_STREAM_NAME_BYTES = 255
#: Bytes of an added diagnostic's or probe's name: room is left for a summary's suffix
#: (``_histogram``) within the 255 of a netCDF name.
MAX_ADDED_NAME_BYTES = 240
STREAM_KEYS = ("fields", "diagnostics", "stage", "summaries")
_STREAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEFAULT_OUTPUT_DIR = "runs"


class Scenario(BaseModel):
    """A run, as written in a scenario file (solver-specific parts still raw)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    solver: str = Field(description="solver name (see `simkit list`)")
    params: dict[str, Any] = Field(default_factory=dict, description="solver parameters")
    initial: dict[str, Any] = Field(default_factory=dict, description="initial condition")
    backend: Literal["numpy", "jax", "torch"] = "numpy"
    device: Literal["cpu", "gpu", "auto"] = "cpu"
    dtype: Literal["float32", "float64"] = "float64"
    compile: bool | None = Field(None, description="compile the loop (default: backend decides)")
    devices: int | None = Field(None, ge=1, description="devices the state is split over (jax); "
                                "along the solver's first splittable dimension unless `mesh` "
                                "says how")
    mesh: dict[str, int] | None = Field(None, description="devices per grid dimension (jax), "
                                        "e.g. {y: 2, x: 2}: the state is split along these")
    steps: int | None = Field(None, ge=0, le=MAX_STEP, description="number of steps")
    until: float | None = Field(None, gt=0, description="simulated end time")
    dt: float | None = Field(None, gt=0, description="time step (default: solver's stable one)")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    stop_when: dict[str, Any] | None = Field(
        None, description="end the run early when a diagnostic crosses a value, e.g. "
        "{diagnostic: change, below: 1e-6} (steps or until stays the limit)")
    check_finite: int = Field(1000, ge=0, description="steps between on-device finiteness "
                              "checks (also at every capture); 0: never")
    flush_seconds: float = Field(2.0, gt=0, le=3600, description="durability lag: a capture is "
                                 "on disk at most about this many seconds after it is computed")
    outputs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    diagnostics: dict[str, Any] = Field(
        default_factory=dict, description="diagnostics added by reference (needs "
        "--allow-import): {name: module:function} or {name: {function, units, long_name, dims}}")
    probes: dict[str, Any] = Field(
        default_factory=dict, description="probes added by reference (needs --allow-import), "
        "computed right after a stage: {name: {stage, function, units, long_name, dims}}")
    objective: dict[str, Any] | None = Field(
        None, description="differentiate the run (`simkit run` adds the gradients to the file): "
        "{misfit: {path, stream, fields}, wrt: [names], checkpoint: sqrt|all, backend: jax|torch}")
    gradients: dict[str, dict[str, Any]] | None = Field(
        None, description="adjoint streams dL/du_k of the objective: {name: {<schedule>, fields}}")
    output: str | None = Field(None, description="output file (default: runs/<scenario>.nc)")

    @model_validator(mode="after")
    def _one_length(self) -> Scenario:
        if (self.steps is None) == (self.until is None):
            given = "both" if self.steps is not None else "neither"
            raise ValueError(f"expected exactly one of 'steps' or 'until', given {given}")
        return self


TOP_LEVEL_KEYS = tuple(Scenario.model_fields)


@dataclass(frozen=True)
class StreamPlan:
    """One output stream, resolved: schedule and the names it keeps."""

    name: str
    schedule: AbstractSchedule
    fields: tuple[str, ...]
    diagnostics: tuple[str, ...]
    stage: str | None = None


@dataclass(frozen=True)
class RunPlan:
    """A validated scenario, ready for the driver."""

    scenario: Scenario
    solver: AbstractSolver
    initial: SolverModel
    dt: float
    streams: tuple[StreamPlan, ...]
    output: Path
    overwrite: bool
    text: str
    source: str | None
    stop_when: When | None = None
    #: Devices per dimension the state is split along, ``(("y", 2), ("x", 2))``; empty: one
    #: device.
    mesh: tuple[tuple[str, int], ...] = ()


# ---------------------------------------------------------------- YAML with line numbers


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader; keys are checked for duplicates while lines are recorded."""


# YAML 1.1 reads `1e-3` (no dot) as a string; YAML 1.2 and every user read it as a number.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


#: Tags YAML 1.1 gives plain words and numbers. A mapping key is a name: read as its text, as
#: YAML 1.2 reads `on`, `off`, `yes` and `no` (a stream named `on` is not `True`).
_TEXT_KEY_TAGS = frozenset(f"tag:yaml.org,2002:{kind}"
                           for kind in ("bool", "null", "int", "float", "timestamp"))


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int], budget: list[int],
          source: str | None) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise ScenarioError(f"expected at most {MAX_NODES} YAML nodes (aliases expanded), given "
                            "more (an alias bomb?)", source=source, line=node.start_mark.line + 1)
    if len(path) > MAX_DEPTH:
        raise ScenarioError(f"expected at most {MAX_DEPTH} levels of nesting, given more",
                            source=source, line=node.start_mark.line + 1)
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            if isinstance(key_node, yaml.ScalarNode) and key_node.style is None \
                    and key_node.tag in _TEXT_KEY_TAGS:
                key_node.tag = "tag:yaml.org,2002:str"
            line = key_node.start_mark.line + 1
            if key in seen:
                dotted = ".".join(str(p) for p in (*path, key))
                raise ScenarioError(f"expected each key once, given {key!r} again (first on line "
                                    f"{seen[key]})", source=source, key=dotted, line=line)
            seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, budget, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines, budget, source)


def load_yaml(text: str, source: str | None = None) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML safely; returns the data and the line of each key path. Plain mapping keys are
    read as their text (`on:` is the name "on"); values as PyYAML reads them (`yes` is true)."""
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[tuple, int] = {}
        _walk(node, (), lines, [MAX_NODES], source)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = " ".join(str(p) for p in (error.context, error.problem) if p)
        raise ScenarioError(f"expected valid YAML, given a syntax error: {problem}",
                            source=source, line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as error:
        raise ScenarioError(f"expected valid YAML, given: {error}", source=source) from None
    except RecursionError:
        # PyYAML composes nested collections recursively, before _walk can count the depth.
        raise ScenarioError(f"expected at most {MAX_DEPTH} levels of nesting, given far more",
                            source=source) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_scenario_file(path: str | os.PathLike) -> tuple[str, Any, dict[tuple, int]]:
    """Read and parse a scenario file; returns text, data and key-path lines."""
    source = str(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise ScenarioError(f"expected a scenario file of at most {MAX_FILE_BYTES} bytes, "
                                f"given {size} bytes", source=source)
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ScenarioError("expected an existing scenario file, given a path that does not "
                            "exist", source=source) from None
    except IsADirectoryError:
        raise ScenarioError("expected a scenario file, given a directory", source=source) from None
    except UnicodeDecodeError as error:
        raise ScenarioError(f"expected UTF-8 text, given undecodable bytes at offset "
                            f"{error.start}", source=source) from None
    except OSError as error:
        raise ScenarioError(f"expected a readable file, given: {error.strerror}",
                            source=source) from None
    data, lines = load_yaml(text, source)
    return text, data, lines


# ---------------------------------------------------------------- overrides


#: Integers that YAML 1.1 reads differently from how they look: `010` as octal (8), `1:20` in
#: base 60 (80).
_SURPRISING_INT = re.compile(r"^[-+]?(?:0[0-9_]+|[0-9][0-9_]*(?::[0-5]?[0-9])+)$")


def _check_override_integers(raw: str, source: str, key: str) -> None:
    """Refuse a ``--set`` integer that YAML 1.1 would silently read as another number."""
    try:
        root = yaml.compose(raw, Loader=_Loader)
    except yaml.YAMLError:
        return  # load_yaml reports it
    nodes = [root] if root is not None else []
    while nodes:
        node = nodes.pop()
        if isinstance(node, yaml.MappingNode):
            nodes.extend(n for pair in node.value for n in pair)
        elif isinstance(node, yaml.SequenceNode):
            nodes.extend(node.value)
        elif node.tag == "tag:yaml.org,2002:int" and _SURPRISING_INT.match(node.value):
            read = yaml.safe_load(node.value)
            how = "base 60" if ":" in node.value else "octal"
            raise ScenarioError(f"expected a decimal integer without leading zeros, given "
                                f"{node.value!r}, which YAML 1.1 reads as {read} ({how}); write "
                                f"the number you mean in plain decimal", source=source, key=key)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``KEY.PATH=VALUE`` (VALUE parsed as YAML) to ``data`` in place."""
    source = f"--set {assignment}"
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"expected KEY=VALUE, given {assignment!r}", source="--set")
    parts = key.strip().split(".")
    _check_override_integers(raw, source, key.strip())
    value, _ = load_yaml(raw, source)
    target = data
    for depth, part in enumerate(parts[:-1]):
        child = target.get(part)
        if child is None:
            child = target[part] = {}
        if not isinstance(child, dict):
            raise ScenarioError(f"expected a mapping to set {parts[depth + 1]!r} in, given "
                                f"{child!r}", source=source, key=".".join(parts[: depth + 1]))
        target = child
    target[parts[-1]] = value


def _plain(value: Any) -> Any:
    """Python data from Python-side input: NumPy scalars become int/float/bool, tuples lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


def merge_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Deep-merge Python keyword overrides into ``data`` in place."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            merge_overrides(data[key], value)
        else:
            data[key] = _plain(value)


# ---------------------------------------------------------------- validation


def _describe_expected(message: str) -> str:
    sized = re.match(r"^(\w+) should have (.*?)(?: after validation)?, not \d+$", message)
    if sized:
        return f"a {sized.group(1).lower()} with {sized.group(2)}"
    for prefix in ("Input should be ", "Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message[:1].lower() + message[1:]


def _fields_at(model: type[BaseModel], loc: tuple) -> tuple[str, ...]:
    """The keys of the (nested) model that ``loc`` leads to from ``model``."""
    for part in loc:
        field = model.model_fields.get(str(part))
        inner = getattr(field, "annotation", None)
        found = [t for t in (inner, *getattr(inner, "__args__", ()))
                 if isinstance(t, type) and issubclass(t, BaseModel)]
        if not found:
            break
        model = found[0]
    return tuple(model.model_fields)


def _pydantic_error(error: ValidationError, prefix: tuple, model: type[BaseModel]
                    ) -> ScenarioError:
    first = error.errors()[0]
    loc = tuple(prefix) + tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or None
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    if first["type"] == "extra_forbidden":
        name = str(first["loc"][-1])
        fields = _fields_at(model, tuple(first["loc"][:-1]))
        return ScenarioError(f"unknown key{did_you_mean(name, fields)}; expected one of "
                             f"{', '.join(fields)}, given {name!r}{more}", key=key)
    if first["type"] == "missing":
        return ScenarioError(f"expected a value for this required key, given nothing{more}",
                             key=key)
    message = _describe_expected(first["msg"])
    if message.startswith("expected"):
        return ScenarioError(message + more, key=key)
    return ScenarioError(f"expected {message}, given {first['input']!r}{more}", key=key)


def validate_model(model: type[BaseModel], data: Any, prefix: tuple = ()) -> Any:
    """``model`` validated from ``data``, or a ScenarioError naming the first bad key."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        key = ".".join(map(str, prefix)) or None
        raise ScenarioError(f"expected a mapping of keys to values, given {data!r}", key=key)
    try:
        return model.model_validate(dict(data))
    except ValidationError as error:
        raise _pydantic_error(error, prefix, model) from None


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
            raise ScenarioError(f"unknown {what}{did_you_mean(name, valid)}; expected some of "
                                f"{', '.join(valid)}, given {name!r}", key=key)
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


def _stream(name: Any, spec: Any, solver: AbstractSolver) -> StreamPlan:
    key = f"outputs.{name}"
    _check_stream_name(name, key)
    if not isinstance(spec, Mapping):
        raise ScenarioError(f"expected a mapping with a schedule and fields, given {spec!r}",
                            key=key)
    field_names = [f.name for f in solver.fields()]
    diag_names = [d.name for d in solver.diagnostics()]
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
            raise ScenarioError(f"unknown stage{did_you_mean(str(stage), stage_names)}; expected "
                                f"one of {', '.join(stage_names)}, given {stage!r}",
                                key=f"{key}.stage")
        for s in stages[: stage_names.index(stage) + 1]:
            capturable.extend(p.name for p in s.probes)
    schedule_spec = {k: v for k, v in spec.items() if k not in STREAM_KEYS}
    has_names = "fields" in spec or "diagnostics" in spec
    fields = _names(spec.get("fields", [] if has_names else field_names), capturable,
                    f"{key}.fields", "field")
    diagnostics = _names(spec.get("diagnostics", []), diag_names, f"{key}.diagnostics",
                         "diagnostic")
    if "summaries" in spec:
        summaries = parse_summaries(spec["summaries"], f"{key}.summaries")
        for summary in summaries:
            if summary.field not in capturable:
                raise ScenarioError(f"unknown field{did_you_mean(summary.field, capturable)}; "
                                    f"expected one of {', '.join(capturable)}, given "
                                    f"{summary.field!r}", key=f"{key}.summaries")
        diagnostics = tuple(dict.fromkeys(diagnostics + tuple(s.name for s in summaries)))
    if not fields and not diagnostics:
        raise ScenarioError("expected at least one field or diagnostic to capture, given none",
                            key=key)
    schedule = parse_schedule(schedule_spec, key)
    for member in members(schedule):
        form = "while" if isinstance(member, While) else "when"
        if isinstance(member, (When, While)) and member.diagnostic not in diag_names:
            raise ScenarioError(f"unknown diagnostic{did_you_mean(member.diagnostic, diag_names)};"
                                f" expected one of {', '.join(diag_names)}, given "
                                f"{member.diagnostic!r}", key=f"{key}.{form}.diagnostic")
        if isinstance(member, (When, While)):
            _check_scalar(solver, member.diagnostic, f"{key}.{form}.diagnostic")
        if isinstance(member, (When, While)):
            _check_stage(solver, member.stage, f"{key}.{form}.stage")
    return StreamPlan(name, schedule, fields, diagnostics, stage)


def _check_stage(solver: AbstractSolver, stage: str | None, key: str) -> None:
    """A condition taken after a stage names one of the solver's stages."""
    stage_names = [s.name for s in solver.stages()]
    if stage is not None and stage not in stage_names:
        raise ScenarioError(f"unknown stage{did_you_mean(stage, stage_names)}; expected one of "
                            f"{', '.join(stage_names)}, given {stage!r}", key=key)


def _check_stream_fires(stream: StreamPlan, scenario: Scenario, dt: float) -> None:
    schedule = stream.schedule
    if schedule.at_end or any(isinstance(m, (When, WallTime)) for m in members(schedule)):
        return
    first_step = schedule.next_step(-1)
    first_time = schedule.next_time(-math.inf)
    end_time = scenario.until if scenario.until is not None else scenario.steps * dt
    by_step = first_step is not None and (scenario.steps is None or first_step <= scenario.steps)
    by_time = first_time is not None and first_time <= end_time * (1 + 1e-12)
    if not (by_step or by_time):
        length = (f"{scenario.steps} steps" if scenario.steps is not None
                  else f"until time {scenario.until}")
        raise ScenarioError(f"expected a schedule that captures within the run ({length}), "
                            "given one that captures nothing", key=f"outputs.{stream.name}")


def _available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _check_memory(solver: AbstractSolver, dtype: str) -> None:
    sizes = {c.name: len(c.values) for c in solver.coordinates()}
    itemsize = 4 if dtype == "float32" else 8
    state = sum(math.prod(sizes[d] for d in f.dims) for f in solver.fields()) * itemsize
    # A step holds a few copies of the state (stages, the loop's carry, a host capture).
    needed, available = 4 * state, _available_memory()
    if needed > available:
        raise ScenarioError(f"expected a grid that fits in memory ({available / 2**30:.1f} GiB "
                            f"available), given one needing about {needed / 2**30:.1f} GiB",
                            key="params")


class SimkitWarning(UserWarning):
    """A setting that is legal but probably not what was meant."""


#: Captures above this many bytes in one stream draw a warning.
LARGE_STREAM_BYTES = 1 << 30


#: Captures one stream may make in a run: each is a row of the file and a call into the writer.
MAX_CAPTURES = 2**40


def _count_member(schedule: AbstractSchedule, steps: int, end_time: float) -> int:
    """Captures of one schedule member within ``steps`` steps, in closed form (a loop over
    10**11 steps would hang ``validate``); 0 for conditions the driver decides."""
    if isinstance(schedule, Every):
        return 0 if steps < schedule.offset else (steps - schedule.offset) // schedule.every + 1
    if isinstance(schedule, (At, LogSpaced)):
        return bisect.bisect_right(schedule.steps, steps)
    if isinstance(schedule, First):
        return 1
    if isinstance(schedule, SimTime):
        span = end_time * (1 + 1e-12) - schedule.start
        return 0 if span < 0 else math.floor(span / schedule.interval) + 1
    return 0


def _count_captures(schedule: AbstractSchedule, steps: int, end_time: float) -> int:
    """Captures of ``schedule`` within ``steps`` steps (a union counts each step once at most,
    an upper bound where its members overlap)."""
    parts = members(schedule)
    by_step = sum(_count_member(m, steps, end_time) for m in parts if not isinstance(m, SimTime))
    by_time = sum(_count_member(m, steps, end_time) for m in parts if isinstance(m, SimTime))
    return min(by_step, steps + 1) + by_time + int(schedule.at_end)


def _check_capture_count(stream: StreamPlan, scenario: Scenario, steps: int, dt: float) -> None:
    end_time = scenario.until if scenario.until is not None else steps * dt
    count = _count_captures(stream.schedule, steps, end_time)
    if count > MAX_CAPTURES:
        raise ScenarioError(f"expected at most {MAX_CAPTURES} captures in one stream, given a "
                            f"schedule making about {count:.3g}", key=f"outputs.{stream.name}")
    if scenario.steps is None:
        return
    # Explicit steps past the end are dropped: say so, a shortened run (--set steps=...) is
    # legal but a typo in `at` should not pass unnoticed.
    beyond = sorted({s for m in members(stream.schedule) if isinstance(m, (At, LogSpaced))
                     for s in m.steps if s > steps})
    if beyond:
        shown = ", ".join(map(str, beyond[:5])) + (", ..." if len(beyond) > 5 else "")
        warnings.warn(f"outputs.{stream.name}: steps {shown} come after the run's last step "
                      f"({steps}) and will not be captured", SimkitWarning, stacklevel=4)


def _warn_questionable(scenario: Scenario, solver: AbstractSolver, streams: tuple[StreamPlan, ...],
                       dt: float, steps: int) -> None:
    end = scenario.until if scenario.until is not None else steps * dt
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
        total = per_capture * _count_captures(stream.schedule, steps, end)
        if total > LARGE_STREAM_BYTES:
            warnings.warn(f"outputs.{stream.name} will write about {total / 2**30:.1f} GiB; "
                          "capture less often or fewer fields if that is not intended",
                          SimkitWarning, stacklevel=4)


def _check_output_text(text: str) -> None:
    """Refuse paths that the C libraries would read differently from Python (a NUL ends a C
    string, so ``victim\\0.nc`` would write ``victim``), or that cannot name a file."""
    if not text.strip():
        raise ScenarioError(f"expected a file path, given {text!r}", key="output")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ScenarioError(f"expected a path without control characters (NUL, newline, ...), "
                            f"given {text!r}", key="output")
    try:
        encoded = os.fsencode(text)
    except UnicodeError:
        raise ScenarioError(f"expected a path of characters the file system can encode, given "
                            f"{text!r}", key="output") from None
    name = os.path.basename(text)
    if text.endswith(("/", os.sep)) or name in ("", ".", ".."):
        raise ScenarioError(f"expected a file path, given the directory {text!r}", key="output")
    longest = max(len(os.fsencode(part)) for part in Path(text).parts)
    if len(encoded) > MAX_PATH_BYTES or longest > MAX_NAME_BYTES:
        raise ScenarioError(f"expected a path of at most {MAX_PATH_BYTES} bytes with names of at "
                            f"most {MAX_NAME_BYTES}, given one of {len(encoded)} bytes with a name "
                            f"of {longest}", key="output")


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _check_output(path: Path, overwrite: bool, inputs: Mapping[str, str]) -> None:
    """Refuse an output that exists and is not a regular file, is one of the run's own inputs
    (``inputs``: what it is -> path), exists without ``overwrite``, or is not a file simkit
    wrote (only those are replaced); probe that it is writable."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
        if os.path.lexists(path):
            raise ScenarioError(f"expected a new file or a regular one, given {str(path)!r}, a "
                                "symbolic link to nothing", key="output") from None
    except OSError as error:
        raise ScenarioError(f"expected a writable location, given {str(path)!r} "
                            f"({error.strerror})", key="output") from None
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise ScenarioError(f"expected a file path, given the directory {str(path)!r}",
                                key="output")
        if not stat.S_ISREG(info.st_mode):
            kind = next((k for test, k in _FILE_KINDS if test(info.st_mode)), "not a regular file")
            raise ScenarioError(f"expected a regular file or a new path, given {str(path)!r}, "
                                f"which is {kind}", key="output")
        for what, other in inputs.items():
            with contextlib.suppress(OSError):
                if os.path.samefile(path, other):
                    raise ScenarioError(f"expected an output other than the run's inputs, given "
                                        f"{str(path)!r}, which is the {what}", key="output")
        if not overwrite:
            raise ScenarioError(f"expected a new file (or --overwrite), given {str(path)!r} "
                                "which exists", key="output")
        check_replaceable(path)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        # A real probe: permission bits say nothing for root or read-only file systems.
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError:
        raise ScenarioError(f"expected a writable location, given {str(path)!r} (cannot write in "
                            f"{str(parent)!r})", key="output") from None


def scenario_json_schema() -> dict[str, Any]:
    """JSON Schema of scenario files, with each installed solver's params and initial."""
    from simkit.solver import available_solvers

    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "simkit scenario"
    branches = []
    for name in available_solvers():
        try:
            cls = load_solver(name)
        except Exception:  # noqa: BLE001 - a broken third-party solver must not hide the rest
            continue
        branches.append({
            "if": {"properties": {"solver": {"const": name}}},
            "then": {"properties": {"params": cls.Params.model_json_schema(),
                                    "initial": cls.Initial.model_json_schema()}},
        })
    schema["properties"]["solver"]["examples"] = available_solvers()
    schema["allOf"] = branches
    return schema


def plan_run(
    scenario: str | os.PathLike | Mapping[str, Any] | Scenario,
    *,
    sets: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    allow_import: bool | None = None,
    search: Sequence[str | os.PathLike] = (),
) -> RunPlan:
    """Load, override and validate a scenario; nothing is computed or written.

    Args:
        scenario: a scenario file, a mapping of scenario data, or a ``Scenario``.
        sets: ``KEY.PATH=VALUE`` overrides, as on the command line.
        overrides: keyword overrides, merged deeply (e.g. ``{"params": {"diffusivity": 0.5}}``).
        overwrite: allow replacing an existing output file.
        allow_import: allow ``solver: module:Class``, which imports (runs) that module, searched
            first beside the scenario file; None reads the ``SIMKIT_ALLOW_IMPORT`` environment
            variable. Registered solver names never need it.
        search: more directories for such imports, after the scenario file's (a resumed run's
            recorded scenario has no file: its run file and original scenario file's).

    Raises:
        ScenarioError: for any bad input, naming file, line, key path, expected and given.
    """
    source: str | None = None
    lines: dict[tuple, int] = {}
    if isinstance(scenario, Scenario):
        data = scenario.model_dump(exclude_none=True)
    elif isinstance(scenario, Mapping):
        try:
            data = _plain(scenario)
        except RecursionError:
            raise ScenarioError(f"expected at most {MAX_DEPTH} levels of nesting, given far "
                                "more", source="<scenario>") from None
    else:
        source = str(scenario)
        _, data, lines = read_scenario_file(scenario)
        if not isinstance(data, dict):
            raise ScenarioError(f"expected a mapping of scenario keys, given {data!r}",
                                source=source, line=1)
    try:
        for assignment in sets:
            apply_override(data, assignment)
        merge_overrides(data, overrides or {})
        return _plan(data, source, overwrite, allow_import, search)
    except RecursionError:
        # Python-side data has no YAML loader to bound its depth.
        raise ScenarioError(f"expected at most {MAX_DEPTH} levels of nesting, given far more",
                            source=source or "<scenario>") from None
    except ScenarioError as error:
        raise locate(error, source, lines, sets) from None


def locate(error: ScenarioError, source: str | None, lines: Mapping[tuple, int],
           sets: Sequence[str] = ()) -> ScenarioError:
    """``error`` said of the scenario ``source`` at the line of its key (``lines``, as
    ``read_scenario_file`` gives them), or of the ``--set`` that gave the key its value."""
    if error.source:
        return error
    # List items are named key[i]: their lines are under the item's index.
    path = tuple(error.key.replace("[", ".").replace("]", "").split(".")) if error.key else ()
    line = None
    while path and line is None:
        line = lines.get(path) or lines.get(tuple(int(p) if p.isdigit() else p for p in path))
        path = path[:-1]
    overridden = [s for s in sets if error.key and
                  (error.key + ".").startswith(s.partition("=")[0].strip() + ".")]
    where = source or "<scenario>"
    if overridden:
        where += f" (--set {overridden[-1]})"
        line = None
    return error.located(where, line)


_ADDED_KEYS = {"diagnostics": ("function", "units", "long_name", "dims"),
               "probes": ("function", "stage", "units", "long_name", "dims")}


def _additions(scenario: Scenario, solver: AbstractSolver, allow_import: bool | None,
               search: Sequence[Path]) -> tuple[Added, ...]:
    """The diagnostics and probes the scenario adds by ``module:function`` reference."""
    stage_names = [s.name for s in solver.stages()]
    coordinates = [c.name for c in solver.coordinates()]
    taken = ([f.name for f in solver.fields()] + [p.name for s in solver.stages()
                                                  for p in s.probes]
             + [d.name for d in solver.diagnostics()] + coordinates + ["step", "time"])
    found: list[Added] = []
    for kind in ("diagnostics", "probes"):
        for name, spec in getattr(scenario, kind).items():
            key = f"{kind}.{name}"
            if not _STREAM_NAME.fullmatch(name) or name in taken:
                raise ScenarioError(f"expected a new name of letters, digits and _ (not one of "
                                    f"{', '.join(taken)}), given {name!r}", key=key)
            if len(name) > MAX_ADDED_NAME_BYTES:
                raise ScenarioError(f"expected a name of at most {MAX_ADDED_NAME_BYTES} "
                                    f"characters (a netCDF name has at most 255 with a summary's "
                                    f"suffix), given one of {len(name)}", key=key)
            taken.append(name)
            spec = {"function": spec} if isinstance(spec, str) else spec
            if not isinstance(spec, Mapping) or "function" not in spec:
                raise ScenarioError(f"expected module:function or a mapping with 'function', "
                                    f"given {spec!r}", key=key)
            for item in spec:
                if item not in _ADDED_KEYS[kind]:
                    raise ScenarioError(f"unknown key{did_you_mean(str(item), _ADDED_KEYS[kind])};"
                                        f" expected one of {', '.join(_ADDED_KEYS[kind])}, given "
                                        f"{item!r}", key=f"{key}.{item}")
            stage = spec.get("stage")
            if kind == "probes" and stage not in stage_names:
                raise ScenarioError(f"unknown stage{did_you_mean(str(stage), stage_names)}; "
                                    f"expected one of {', '.join(stage_names)}, given {stage!r}",
                                    key=f"{key}.stage")
            first = solver.fields()[0].dims if kind == "probes" else ()
            dims = spec.get("dims", list(first))
            if not isinstance(dims, list) or any(d not in coordinates for d in dims):
                raise ScenarioError(f"expected a list of dimensions among {', '.join(coordinates)}"
                                    f", given {dims!r}", key=f"{key}.dims")
            for text in ("units", "long_name"):
                if not isinstance(spec.get(text, ""), str):
                    raise ScenarioError(f"expected a string, given {spec[text]!r}",
                                        key=f"{key}.{text}")
            fn = load_function(spec["function"], key=f"{key}.function",
                               allow_import=allow_import, search=search)
            found.append(Added(name, fn, spec.get("units", "1"), spec.get("long_name", name),
                               tuple(dims), stage))
    return tuple(found)


def _extend(solver: AbstractSolver, scenario: Scenario, initial: SolverModel,
            added: tuple[Added, ...]) -> AbstractSolver:
    """The solver with the diagnostics and probes ``added`` and the summaries its streams
    declare as generated diagnostics; a histogram without a range takes it from the initial
    state (the first capture of a field)."""
    found: dict[str, tuple[str, Summary]] = {}
    state = None
    known = ([f.name for f in solver.fields()] + [p.name for st in solver.stages()
                                                  for p in st.probes]
             + [a.name for a in added if a.stage is not None])
    for name, spec in scenario.outputs.items():
        if not isinstance(spec, Mapping) or "summaries" not in spec:
            continue
        key = f"outputs.{name}.summaries"
        for summary in parse_summaries(spec["summaries"], key):
            summary = replace(summary, dtype=scenario.dtype)
            if summary.field not in known:
                raise ScenarioError(f"unknown field{did_you_mean(summary.field, known)}; expected "
                                    f"one of {', '.join(known)}, given {summary.field!r}",
                                    key=key)
            if summary.kind == "histogram" and summary.range is None:
                if summary.field not in [f.name for f in solver.fields()]:
                    raise ScenarioError(f"expected a range for the histogram of "
                                        f"{summary.field!r} (only fields of the initial state fix "
                                        "one by themselves), given none", key=key)
                if state is None:
                    with contextlib.suppress(Exception):  # a bad initial state is reported later
                        state = solver.initial_state(initial,
                                                     np.random.default_rng(scenario.seed))
                if state is None:
                    return extended(solver, (), added)
                summary = summary.with_range_of(state[summary.field])
            earlier = found.setdefault(summary.name, (key, summary))
            if earlier[1] != summary:
                raise ScenarioError(f"expected one {summary.kind} of {summary.field!r} in every "
                                    f"stream, given another in {earlier[0]}", key=key)
    return extended(solver, [summary for _, summary in found.values()], added)


def _run_length(scenario: Scenario, dt: float) -> int:
    """The run's step limit (``until`` converted at the nominal ``dt``), bounded."""
    if scenario.steps is not None:
        return scenario.steps
    steps = scenario.until / dt
    if steps > MAX_STEP:
        raise ScenarioError(f"expected at most {MAX_STEP} steps (until / dt), given until "
                            f"{scenario.until:g} with dt {dt:g}: {steps:.3g} steps", key="until")
    return math.ceil(steps)


def _check_initial(solver: AbstractSolver, initial: SolverModel, seed: int) -> None:
    """Build the initial state once, so a bad initial condition (a ``.npy`` of the wrong shape or
    type, say) is reported as bad input by ``validate`` and before any file is written."""
    try:
        with warnings.catch_warnings():
            # Casting complex values to float drops their imaginary part: an error here.
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            state = solver.initial_state(initial, np.random.default_rng(seed))
    except ScenarioError:
        raise
    except (ValueError, TypeError, OSError, EOFError, np.exceptions.ComplexWarning) as error:
        text = " ".join(str(error).split())
        raise ScenarioError(f"expected an initial condition {solver.name} can build, given one "
                            f"that fails: {type(error).__name__}: {text}", key="initial") from None
    sizes = {c.name: len(c.values) for c in solver.coordinates()}
    for spec in solver.fields():
        value = state.get(spec.name) if isinstance(state, Mapping) else None
        shape = tuple(sizes[d] for d in spec.dims)
        if not isinstance(value, np.ndarray) or value.shape != shape \
                or value.dtype.kind not in "fiu":
            given = (f"{value.dtype} array of shape {list(value.shape)}"
                     if isinstance(value, np.ndarray) else type(value).__name__)
            raise ScenarioError(f"expected initial field {spec.name!r} as a real array of shape "
                                f"{list(shape)}, given a {given}", key="initial")


def _plan(data: dict[str, Any], source: str | None, overwrite: bool,
          allow_import: bool | None = None, extra: Sequence[str | os.PathLike] = ()
          ) -> RunPlan:
    scenario: Scenario = validate_model(Scenario, data)
    _check_stream_count(scenario)
    if scenario.gradients and scenario.objective is None:
        raise ScenarioError("expected an objective block beside gradients (they are adjoints of "
                            "an objective), given none", key="gradients")
    if scenario.output is not None:
        _check_output_text(scenario.output)
    search = ((Path(source).parent,) if source else ()) + tuple(Path(d) for d in extra)
    solver_cls = load_solver(scenario.solver, allow_import=allow_import, search=search)
    params = validate_model(solver_cls.Params, scenario.params, ("params",))
    initial = validate_model(solver_cls.Initial, scenario.initial, ("initial",))
    try:
        solver = solver_cls(params)
        _check_memory(solver, scenario.dtype)
    except ScenarioError:
        raise
    except (MemoryError, OverflowError, ValueError) as error:
        # Sizes pydantic let through can still be too large to lay out (10**12 trajectories).
        raise ScenarioError(f"expected params {solver_cls.name} can lay out in memory, given ones "
                            f"that fail ({type(error).__name__})", key="params") from None
    limit = solver.max_stable_dt()
    dt = scenario.dt if scenario.dt is not None else solver.default_dt()
    if limit is not None and dt > limit:
        raise ScenarioError(f"expected at most {limit:g}, the stable limit of {solver.name} for "
                            f"these params, given {dt:g}", key="dt")
    steps = _run_length(scenario, dt)
    solver = _extend(solver, scenario, initial,
                     _additions(scenario, solver, allow_import, search))
    streams = tuple(_stream(name, spec, solver) for name, spec in scenario.outputs.items())
    for stream in streams:
        _check_stream_fires(stream, scenario, dt)
        _check_capture_count(stream, scenario, steps, dt)
    if scenario.output is not None:
        output = Path(scenario.output)
    else:
        stem = Path(source).stem if source else scenario.solver
        output = Path(_DEFAULT_OUTPUT_DIR) / f"{stem}.nc"
    inputs = {"scenario file": source} if source else {}
    if isinstance(getattr(initial, "path", None), str):
        inputs["initial condition file"] = initial.path
    misfit = (scenario.objective or {}).get("misfit")
    if isinstance(misfit, Mapping) and isinstance(misfit.get("path"), str):
        inputs["observations file (objective.misfit.path)"] = misfit["path"]
    _check_output(output, overwrite, inputs)
    stop_when = None
    if scenario.stop_when is not None:
        stop_when = parse_condition("when", scenario.stop_when, "stop_when")
        diag_names = [d.name for d in solver.diagnostics()]
        if stop_when.diagnostic not in diag_names:
            raise ScenarioError(f"unknown diagnostic{did_you_mean(stop_when.diagnostic, diag_names)}"
                                f"; expected one of {', '.join(diag_names)}, given "
                                f"{stop_when.diagnostic!r}", key="stop_when.diagnostic")
        _check_scalar(solver, stop_when.diagnostic, "stop_when.diagnostic")
        _check_stage(solver, stop_when.stage, "stop_when.stage")
    _check_initial(solver, initial, scenario.seed)
    mesh = _mesh(scenario, solver)
    _warn_questionable(scenario, solver, streams, dt, steps)
    text = yaml.safe_dump(scenario.model_dump(exclude_none=True), sort_keys=False)
    return RunPlan(scenario=scenario, solver=solver, initial=initial, dt=dt, streams=streams,
                   output=output, overwrite=overwrite, text=text, source=source,
                   stop_when=stop_when, mesh=mesh)


def _mesh(scenario: Scenario, solver: AbstractSolver) -> tuple[tuple[str, int], ...]:
    """The device mesh of ``devices`` / ``mesh``, checked against the backend and the solver's
    dimensions (which it may split, and whether each size divides evenly)."""
    if scenario.devices is None and scenario.mesh is None:
        return ()
    key = "mesh" if scenario.mesh is not None else "devices"
    if scenario.backend != "jax":
        raise ScenarioError(f"expected backend jax for a run split over devices, given "
                            f"{scenario.backend!r}", key=key)
    sizes = {c.name: len(c.values) for c in solver.coordinates()}
    dims = list(dict.fromkeys(d for f in solver.fields() for d in f.dims))
    allowed = [d for d in (solver.split_dims if solver.split_dims is not None else dims)
               if d in dims]
    if scenario.mesh is None:
        if not allowed:
            raise ScenarioError(f"solver {solver.name} cannot be split over devices (it names "
                                f"no splittable dimension), given devices: {scenario.devices}",
                                key="devices")
        mesh = {allowed[0]: scenario.devices}
    else:
        mesh = dict(scenario.mesh)
    for dim, count in mesh.items():
        if dim not in allowed:
            raise ScenarioError(f"solver {solver.name} can be split along "
                                f"{', '.join(allowed) or 'no dimension'}, given {dim!r}",
                                key=f"mesh.{dim}")
        if count < 1 or sizes[dim] % count:
            raise ScenarioError(f"expected a device count dividing the {sizes[dim]} points of "
                                f"{dim!r}, given {count}", key=f"mesh.{dim}")
    total = math.prod(mesh.values())
    if scenario.devices is not None and scenario.mesh is not None and total != scenario.devices:
        raise ScenarioError(f"expected devices equal to the mesh's {total} devices, given "
                            f"{scenario.devices}", key="devices")
    return tuple((dim, count) for dim, count in mesh.items() if count > 1)
