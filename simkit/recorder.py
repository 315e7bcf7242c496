"""Recording any Python loop: the schedules, host copies, writer, checksums and crash safety of a
run, for values the loop passes (NumPy, JAX or torch arrays, or Python numbers).

    with simkit.record("out.nc", outputs={"snap": {"every": 10, "fields": ["u"]}}) as rec:
        for i in range(n):
            u = update(u)
            rec.step(i, time=i * dt, u=u)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import math
import os
import re
import sys
import time as _time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from array_api_compat import device, is_jax_array, is_torch_array

from simkit._version import __version__
from simkit.errors import DiskFullError, RunInterrupted, ScenarioError
from simkit.io import BackgroundWriter, NetCDFWriter, schema
from simkit.io.netcdf import check_replaceable
from simkit.scenario import STREAM_KEYS
from simkit.schedule import (
    MAX_STEP,
    AbstractSchedule,
    At,
    Every,
    First,
    Last,
    LogSpaced,
    WallTime,
    When,
    While,
    members,
    parse_schedule,
)
from simkit.solver._summaries import DTYPES as SUMMARY_DTYPES
from simkit.solver._summaries import Summary, parse_summaries

#: Keys of a recorder stream besides its schedule.
RECORD_STREAM_KEYS = tuple(dict.fromkeys((*STREAM_KEYS, "summaries")))
#: A value, probe or stream name: what a netCDF name may hold, at most 240 characters (255
#: with a summary's suffix such as ``_histogram``); ``\Z``, not ``$``, which matches before a
#: trailing newline.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,239}\Z")
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

    @property
    def values(self) -> tuple[str, ...]:
        """Every value the loop must pass for a capture (summaries read their field)."""
        return tuple(dict.fromkeys(self.fields + self.diagnostics
                                   + tuple(s.field for s in self.summaries)))


def _name_list(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and _NAME.match(v)
                                              for v in value):
        raise ScenarioError(f"expected a list of value names (letters, digits and _, at most "
                            f"240 characters), given "
                            f"{value!r}", key=key)
    return tuple(dict.fromkeys(value))


def parse_stream(name: Any, spec: Any) -> RecordStream:
    """A recorder stream from the same data as a scenario's ``outputs`` entry.

    Raises:
        ScenarioError: naming the key path, what was expected and what was given.
    """
    key = f"outputs.{name}"
    if not isinstance(name, str) or not _NAME.match(name) or name in _RESERVED:
        raise ScenarioError(f"expected a stream name of letters, digits and _, at most 240 "
                            f"characters (not step or time), given {name!r}", key=key)
    if not isinstance(spec, Mapping):
        raise ScenarioError(f"expected a mapping with a schedule and fields, given {spec!r}",
                            key=key)
    fields = _name_list(spec.get("fields", []), f"{key}.fields")
    diagnostics = _name_list(spec.get("diagnostics", []), f"{key}.diagnostics")
    summaries = (parse_summaries(spec["summaries"], f"{key}.summaries")
                 if "summaries" in spec else ())
    everything = "fields" not in spec and "diagnostics" not in spec
    if not everything and not fields and not diagnostics and not summaries:
        raise ScenarioError("expected at least one field, diagnostic or summary to capture, "
                            "given none", key=key)
    stage = spec.get("stage")
    if stage is not None and (not isinstance(stage, str) or not stage):
        raise ScenarioError(f"expected a stage name, given {stage!r}", key=f"{key}.stage")
    schedule = parse_schedule({k: v for k, v in spec.items() if k not in RECORD_STREAM_KEYS},
                              key)
    for member in members(schedule):
        if isinstance(member, (When, While)) and member.stage is not None:
            form = "while" if isinstance(member, While) else "when"
            raise ScenarioError("expected a condition on a value the loop passes, given one on "
                                f"stage {member.stage!r} (a scenario run's form)",
                                key=f"{key}.{form}.stage")
    if stage is not None:
        for member in members(schedule):
            if isinstance(member, While) or not isinstance(member, (Every, At, LogSpaced, First,
                                                                     Last)):
                raise ScenarioError("expected a step schedule (every, at, logspace, first, last) "
                                    f"for a stage capture, given {type(member).__name__.lower()}",
                                    key=f"{key}.stage")
    _check_once(RecordStream(name, schedule, fields, diagnostics, stage, summaries))
    return RecordStream(name, schedule, fields, diagnostics, stage, summaries, everything)


def _check_once(stream: RecordStream) -> None:
    names = stream.fields + stream.diagnostics + tuple(s.name for s in stream.summaries)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ScenarioError(f"expected each value once per stream, given {twice[0]!r} as field, "
                            "diagnostic or summary at once", key=f"outputs.{stream.name}")


def _library(value: Any) -> str:
    return "torch" if is_torch_array(value) else "jax" if is_jax_array(value) else "numpy"


def _to_host(value: Any, dtype: Any = None) -> np.ndarray:
    """A host copy of ``value`` (never a view of it: later in-place updates cannot reach it)."""
    if is_torch_array(value):
        tensor = value.detach()
        if tensor.is_floating_point() and tensor.element_size() < 4:
            tensor = tensor.float()  # bfloat16 and float8 have no NumPy dtype: float32 holds them
        host = tensor.numpy().copy() if tensor.device.type == "cpu" else tensor.cpu().numpy()
    else:
        host = np.array(value, copy=True)  # a JAX array on CPU may otherwise be a read-only view
    return host if dtype is None else host.astype(dtype, copy=False)


#: Dtypes a NetCDF file has no type for, stored in the narrowest one that holds them exactly.
_WIDENED = {"float16": "float32", "bfloat16": "float32", "bool": "int8"}


def _dtype_name(value: Any) -> str:
    """The dtype of ``value`` by name (``str`` and ``bytes`` for text of any length)."""
    if isinstance(value, (bool, int, float)):
        return "float64"
    if is_torch_array(value):
        return str(value.dtype).removeprefix("torch.")
    dtype = np.dtype(value.dtype if hasattr(value, "shape") and hasattr(value, "dtype")
                     else np.asarray(value).dtype)
    return {"U": "str", "S": "bytes"}.get(dtype.kind, dtype.name)


def _castable(given: str, target: str) -> bool:
    """Whether values of dtype ``given`` are real numbers that cast to ``target`` within their
    kind (never complex to real, nor floats to integers)."""
    stored = _WIDENED.get(given, given)
    try:
        return np.dtype(stored).kind in "iuf" and np.can_cast(stored, target, "same_kind")
    except TypeError:  # a dtype NumPy does not know (float8 and the like are widened first)
        return False


def _shape_dtype(name: str, value: Any) -> tuple[tuple[int, ...], str]:
    """The shape of ``value`` and the dtype it is stored in.

    Raises:
        ScenarioError: ``value`` is not real numbers (complex, text, objects).
    """
    given = _dtype_name(value)
    if not _castable(given, "float64"):
        raise ScenarioError(f"expected real numbers (booleans, integers or floats) to record, "
                            f"given an array of {given}", key=name)
    shape = () if isinstance(value, (bool, int, float)) else tuple(np.shape(value)) \
        if not hasattr(value, "shape") else tuple(value.shape)
    return shape, _WIDENED.get(given, given)


class Recorder:
    """Captures what a loop passes, on the schedules of its streams, into one run file.

    Made by ``simkit.record``; see there. The file is laid out at the first capture, from the
    shapes and dtypes of the values seen so far.
    """

    def __init__(self, path: str | os.PathLike, outputs: Mapping[str, Any], *,
                 coords: Mapping[str, Any] | None = None,
                 dims: Mapping[str, tuple[str, ...]] | None = None,
                 units: Mapping[str, str] | None = None,
                 long_names: Mapping[str, str] | None = None,
                 attrs: Mapping[str, Any] | None = None, time_units: str = "1",
                 overwrite: bool = False, max_pending: int = 8) -> None:
        if not isinstance(outputs, Mapping) or not outputs:
            raise ScenarioError(f"expected a mapping of stream names to streams, given "
                                f"{outputs!r}", key="outputs")
        self.path = Path(path)
        _check_path(self.path)
        if self.path.exists() and not overwrite:
            raise ScenarioError(f"expected a new file (or overwrite=True), given "
                                f"{str(self.path)!r}, which exists", key="path")
        if os.path.lexists(self.path):
            check_replaceable(self.path, key="path")  # only a file simkit wrote
        self.streams = tuple(parse_stream(name, spec) for name, spec in outputs.items())
        self._outputs = json.loads(json.dumps(outputs, default=str))
        self._coords = dict(coords or {})
        self._dims = {k: tuple(v) for k, v in (dims or {}).items()}
        self._units = dict(units or {})
        self._long_names = dict(long_names or {})
        self._attrs = dict(attrs or {})
        self._time_units = time_units
        self._overwrite = overwrite
        self._max_pending = max_pending
        self._seen: dict[str, tuple[tuple[int, ...], str]] = {}
        self._writer: BackgroundWriter | None = None
        self._queued = 0
        self._last_step: int | None = None
        self._last_time = 0.0
        self._last_values: dict[str, Any] = {}
        self._last_captured: dict[str, int] = {}
        self._step_host: dict[str, np.ndarray] = {}
        self._stage: str | None = None
        self._probes: dict[str, dict[str, Any]] = {}
        self._probe_copies: dict[str, dict[str, np.ndarray]] = {}
        self._loose: dict[str, Any] = {}
        self._summaries: dict[str, Summary] = {}
        self._when_prev: dict[int, bool] = {}
        self._closed: Path | None = None
        self._held: list[tuple[str, int, float, dict[str, np.ndarray]]] = []
        self._last_probes: dict[str, dict[str, Any]] = {}
        self._library: str | None = None
        self._device = "cpu"
        self._started = _now()
        for stream in self.streams:
            for member in members(stream.schedule):
                if isinstance(member, WallTime):
                    member.reset()
                if isinstance(member, When):
                    member.reset()

    # ------------------------------------------------------------------ schedules

    def _plain(self) -> list[RecordStream]:
        return [s for s in self.streams if s.stage is None]

    def due(self, step: int, time: float | None = None) -> bool:
        """Whether a capture may be taken at ``step``: False lets the loop skip computing values
        only captures need. Conditional streams (``when``, ``while``) count as due at each
        candidate step (their condition needs the value); ``last`` captures are taken at close
        from the last step's values."""
        t = float(step) if time is None else float(time)
        for stream in self.streams:
            for member in members(stream.schedule):
                if isinstance(member, When) or (isinstance(member, WallTime)
                                                and member.seconds_left() <= 0):
                    return True
                if not isinstance(member, Last) and member.fires(step, t):
                    return True
        return False

    def _condition(self, stream: RecordStream, name: str, values: Mapping[str, Any]) -> float:
        if name not in values:
            raise ScenarioError(f"expected the value {name!r} that the condition of stream "
                                f"{stream.name!r} reads, given {', '.join(values) or 'none'}",
                                key=f"outputs.{stream.name}")
        value = values[name]
        return float(_to_host(value() if callable(value) else value, np.float64))

    def _due_streams(self, step: int, time: float, values: Mapping[str, Any]
                     ) -> list[RecordStream]:
        due = []
        for stream in self._plain():
            fires = False
            for member in members(stream.schedule):
                if isinstance(member, While):
                    fires |= member.fires(step, time) and member.holds(
                        self._condition(stream, member.diagnostic, values))
                elif isinstance(member, When):
                    holds = member.holds(self._condition(stream, member.diagnostic, values))
                    before = self._when_prev.get(id(member))
                    self._when_prev[id(member)] = holds
                    # Edge-triggered, as in a run: the state a recording starts from never fires.
                    if holds and before is False and member.may_fire(step):
                        member.fired(step)
                        fires = True
                elif isinstance(member, WallTime):
                    if member.due():
                        member.fired()
                        fires = True
                elif not isinstance(member, Last) and member.fires(step, time):
                    fires = True
            if fires:
                due.append(stream)
        return due

    # ------------------------------------------------------------------ the loop's calls

    def step(self, step: int, time: float | None = None, **values: Any) -> None:
        """Record the values of the loop at ``step`` (the state after ``step`` steps; 0 is the
        initial state): every stream due takes a host copy now. A value may be a function of no
        arguments, called only when a capture needs it, or None for one not computed at this
        step (a stream due that keeps it is an error).

        Raises:
            ScenarioError: a step not after the last one, a value a due stream needs missing, or
                of another shape than at its first capture.
        """
        self._check_open()
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) \
                or not 0 <= int(step) <= MAX_STEP:
            given = int(step) if isinstance(step, np.integer) else step
            raise ScenarioError(f"expected a whole step number from 0 to {MAX_STEP}, given "
                                f"{given!r}", key="step")
        step = int(step)
        if self._last_step is not None and step <= self._last_step:
            raise ScenarioError(f"expected a step after the last one recorded ({self._last_step}),"
                                f" given {step}", key="step")
        t = float(step) if time is None else float(_to_host(time, np.float64))
        if not math.isfinite(t):
            raise ScenarioError(f"expected a finite time, given {t}", key="time")
        clash = sorted(set(values) & set(self._loose))
        if clash:
            raise ScenarioError(f"expected {clash[0]!r} once, given it both to probe() and to "
                                "step()", key=clash[0])
        # None stands for a value the loop did not compute at this step (see ``due``).
        values = {k: v for k, v in {**self._loose, **values}.items() if v is not None}
        self._loose, self._step_host = {}, {}
        for name, value in values.items():
            if not callable(value):
                self._see(name, value)
        probes, self._probes = self._probes, {}
        self._keep_everything(step, values, probes)
        due = self._due_streams(step, t, values)
        # A stage that did not run this step (none before step 0) captures nothing.
        staged = [s for s in self.streams if s.stage in probes and s.schedule.fires(step, t)]
        copies, self._probe_copies = self._probe_copies, {}
        if due:
            needed = {n for s in due for n in s.values}
            resolved = {name: (value() if callable(value) and name in needed else value)
                        for name, value in values.items()}
            self._capture(due, step, t, resolved)
            values = resolved
        for stream in staged:
            found = {**probes.get(stream.stage, {})}
            self._capture([stream], step, t, found, copies.get(stream.stage, {}))
        self._last_step, self._last_time = step, t
        self._last_values = values
        self._last_probes = probes

    def _keep_everything(self, step: int, values: Mapping[str, Any],
                         probes: Mapping[str, Mapping[str, Any]]) -> None:
        """Fix the fields of the streams that keep everything: the values of this first step
        (a stage's stream: the probes of the first step its stage runs in). Nothing to do,
        and no work on this per-step path, once none is left."""
        if not any(stream.everything for stream in self.streams):
            return
        streams = list(self.streams)
        for i, stream in enumerate(streams):
            if not stream.everything or (stream.stage is not None and stream.stage not in probes):
                continue
            given = values if stream.stage is None else probes[stream.stage]
            key = f"outputs.{stream.name}"
            if not given:
                what = ("every value the first step passes" if stream.stage is None
                        else f"every probe of stage {stream.stage!r}")
                raise ScenarioError(f"expected values to keep (a stream without fields or "
                                    f"diagnostics keeps {what}), given none at step {step}",
                                    key=key)
            fields = _name_list(list(given), f"{key}.fields")
            streams[i] = replace(stream, fields=fields, everything=False)
            _check_once(streams[i])
        self.streams = tuple(streams)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[Recorder]:
        """Mark a part of the next step: ``probe`` calls inside belong to stage ``name``, which
        streams with ``stage: name`` capture, labelled with the step the next ``step`` call
        records (as a run labels a stage of the step that ends at that step)."""
        self._check_open()
        if self._stage is not None:
            raise ScenarioError(f"expected stages one after another, given {name!r} inside "
                                f"{self._stage!r}", key="stage")
        self._stage = name
        try:
            yield self
        finally:
            self._stage = None

    def probe(self, name: str, value: Any) -> None:
        """Record an intermediate ``value`` under ``name``: inside ``stage(...)`` for the streams
        of that stage, outside for the next ``step`` call (as if passed to it). Copied now when a
        stream of the stage is due at the next step."""
        self._check_open()
        if not isinstance(name, str) or not _NAME.match(name):
            raise ScenarioError(f"expected a probe name of letters, digits and _, at most 240 "
                                f"characters, given {name!r}", key="probe")
        if self._stage is None:
            self._loose[name] = value
            return
        self._probes.setdefault(self._stage, {})[name] = value
        self._see(name, value)
        upcoming = 0 if self._last_step is None else self._last_step + 1
        if any(s.stage == self._stage and (name in s.values or s.everything)
               and s.schedule.fires(upcoming, math.nan) for s in self.streams):
            self._probe_copies.setdefault(self._stage, {})[name] = _to_host(value)

    def _see(self, name: str, value: Any) -> None:
        """Remember the shape and dtype of a value (and the first array's library and device)."""
        if name in self._seen:
            return
        with contextlib.suppress(ScenarioError):  # refused if a stream keeps it (``_capture``)
            self._seen[name] = _shape_dtype(name, value)
        if self._library is None and hasattr(value, "shape"):
            self._library = _library(value)
            with contextlib.suppress(Exception):
                self._device = str(device(value)) if self._library != "numpy" else "cpu"

    def flush(self) -> None:
        """Wait until every capture so far is in the file, synced and fsync'ed."""
        if self._writer is None:
            return
        while self._writer.written < self._queued:
            self._writer._raise_pending()
            if not self._writer._thread.is_alive():
                break
            _time.sleep(0.001)
        self._writer._raise_pending()

    # ------------------------------------------------------------------ captures

    def _capture(self, streams: list[RecordStream], step: int, time: float,
                 values: Mapping[str, Any], copies: Mapping[str, np.ndarray] | None = None
                 ) -> None:
        copies = dict(copies or {})
        for stream in streams:
            missing = [n for n in stream.values if n not in values and n not in copies]
            if missing:
                raise ScenarioError(f"expected the value {missing[0]!r} that stream "
                                    f"{stream.name!r} keeps at step {step}, given "
                                    f"{', '.join(values) or 'none'}",
                                    key=f"outputs.{stream.name}")
        host: dict[str, np.ndarray] = {}
        for stream in streams:
            for name in stream.fields + stream.diagnostics:
                if name in host:
                    continue
                if name not in self._seen:
                    self._seen[name] = _shape_dtype(name, copies[name] if name in copies
                                                    else values[name])
                shape, dtype = self._seen[name]
                value = copies[name] if name in copies else _to_host(values[name])
                target = "float64" if name in stream.diagnostics else dtype
                self._check_kind(stream, name, _dtype_name(value), target)
                value = value.astype(target, copy=False)
                if value.shape != shape:
                    raise ScenarioError(f"expected {name!r} of shape {shape} (as first seen), "
                                        f"given shape {value.shape}",
                                        key=f"outputs.{stream.name}")
                host[name] = value
            for summary in stream.summaries:
                if summary.name in host:
                    continue
                source = values[summary.field] if summary.field in values \
                    else copies[summary.field]
                given = _dtype_name(source)
                self._check_kind(stream, summary.field, given, "float64")
                fixed = self._summaries.get(summary.name)
                if fixed is None:  # a histogram in the values' dtype, as numpy.histogram
                    fixed = replace(summary,
                                    dtype=given if given in SUMMARY_DTYPES else "float64")
                    fixed = self._summaries[summary.name] = fixed.with_range_of(
                        _to_host(source) if summary.range is None
                        and summary.kind == "histogram" else None)
                host[summary.name] = _to_host(fixed.compute(source), np.float64)
        for stream in streams:
            self._held.append((stream.name, step, time, host))
            self._last_captured[stream.name] = step
        self._step_host.update(host)
        self._write_held()

    def _check_kind(self, stream: RecordStream, name: str, given: str, target: str) -> None:
        """Refuse a value that ``target`` cannot hold without changing its kind (a float field
        given complex values, text), rather than cast it."""
        if not _castable(given, target):
            first = " (as first seen)" if name in stream.fields else ""
            raise ScenarioError(f"expected {name!r} as {target}{first} or a type that casts to "
                                f"it without loss of kind, given {given}",
                                key=f"outputs.{stream.name}")

    def _write_held(self, required: bool = False) -> None:
        """Hand the captures taken so far to the writer, laying the file out first once every
        value the streams keep has been seen (a stage's probes appear only after step 0)."""
        if self._writer is None:
            unseen = [(s, n) for s in self.streams for n in s.values if n not in self._seen]
            unseen += [(s, None) for s in self.streams if s.everything]
            # Captures wait in memory only until the step after the first (a stage's probes
            # come from step 1 on): past that, a value never given is an error, not a leak.
            waiting = len({step for _, step, _, _ in self._held})
            if unseen and not required and waiting <= 2:
                return
            if unseen:
                stream, name = unseen[0]
                when = "by the end" if required else "by the second step that captures"
                what = (f"for {name!r} of stream {stream.name!r}" if name is not None else
                        f"from stage {stream.stage!r}, whose every probe stream "
                        f"{stream.name!r} keeps")
                raise ScenarioError(f"expected every value the streams keep {when} (the file is "
                                    f"laid out from them), given none {what}",
                                    key=f"outputs.{stream.name}")
            self._open()
        assert self._writer is not None
        held, self._held = self._held, []
        for name, step, time, host in held:
            arrays = {v.name: host[v.name] for v in self._spec(name).variables}
            self._writer.capture(name, step, time, arrays)
            self._queued += 1
        if held:  # the file says how far it is whole once these are on disk
            self._writer.committed(max(step for _, step, _, _ in held))

    def _spec(self, name: str) -> schema.StreamSpec:
        assert self._writer is not None
        return next(s for s in self._writer.writer.layout.streams if s.name == name)

    # ------------------------------------------------------------------ the file

    def _open(self) -> None:
        """Lay the file out from the values seen so far."""
        coordinates = {}
        for name, coord in self._coords.items():
            if isinstance(coord, tuple):
                data, unit, long_name = (list(coord) + [None, None])[:3]
            else:
                data, unit, long_name = coord, None, None
            coordinates[name] = schema.CoordinateSpec(name, np.asarray(data), unit or "1",
                                                      long_name or name)
        specs: dict[str, schema.VariableSpec] = {}

        def variable(name: str, dtype: str | None) -> schema.VariableSpec:
            shape, seen_dtype = self._seen[name]
            dims = self._dims.get(name) or tuple(f"{name}_dim{k}" for k in range(len(shape)))
            if len(dims) != len(shape):
                raise ScenarioError(f"expected {len(shape)} dimension names for {name!r} of "
                                    f"shape {shape}, given {dims}", key=f"dims.{name}")
            for dim, size in zip(dims, shape, strict=True):
                known = coordinates.get(dim)
                if known is None:
                    coordinates[dim] = schema.CoordinateSpec(
                        dim, np.arange(size), "1", f"index along dimension {dim}")
                elif len(known.values) != size:
                    raise ScenarioError(f"expected {name!r} to have {len(known.values)} values "
                                        f"along {dim!r} (its coordinate), given {size}",
                                        key=f"dims.{name}")
            return schema.VariableSpec(name, dims, self._units.get(name, "1"),
                                       self._long_names.get(name, name), dtype or seen_dtype)

        streams = []
        for stream in self.streams:
            fields = tuple(specs.setdefault(n, variable(n, None)) for n in stream.fields)
            diagnostics = [specs.setdefault(n, variable(n, "float64"))
                           for n in stream.diagnostics]
            for summary in stream.summaries:
                summary = self._summaries.get(summary.name, summary)
                if summary.kind == "histogram" and summary.range is None:
                    raise ScenarioError(f"expected a range for the histogram of "
                                        f"{summary.field!r} (or a capture to fix it from), given "
                                        "none", key=f"outputs.{stream.name}.summaries")
                units = self._units.get(summary.field, "1")
                for coord in summary.coordinates(units):
                    coordinates[coord.name] = schema.CoordinateSpec(
                        coord.name, np.asarray(coord.values), coord.units, coord.long_name)
                diagnostics.append(schema.VariableSpec(
                    summary.name, summary.dims, summary.units(units),
                    summary.long_name(self._long_names.get(summary.field)), "float64"))
            streams.append(schema.StreamSpec(stream.name, fields, tuple(diagnostics),
                                             stream.stage))
        finals = [n for s in self.streams if s.stage is None for n in s.fields]
        layout = schema.RunLayout(coordinates=tuple(coordinates.values()),
                                  fields=tuple(specs[n] for n in dict.fromkeys(finals)),
                                  streams=tuple(streams), time_units=self._time_units)
        field_dtypes = sorted({specs[n].dtype for n in finals}) or ["float64"]
        library = self._library or "numpy"
        attrs = {
            schema.ATTR_TITLE: "simkit recording",
            schema.ATTR_SOURCE: f"simkit {__version__}, recorder on {library}",
            schema.ATTR_SOLVER: "record",
            schema.ATTR_SOLVER_VERSION: __version__,
            schema.ATTR_BACKEND: library,
            schema.ATTR_DEVICE: self._device,
            schema.ATTR_DTYPE: " ".join(field_dtypes),
            schema.ATTR_SCENARIO: yaml.safe_dump({"record": {"outputs": self._outputs}},
                                                 sort_keys=False),
            schema.ATTR_SCENARIO_FILE: sys.argv[0] if sys.argv and sys.argv[0] else "",
            schema.ATTR_VERSIONS: _versions(library),
            schema.ATTR_STARTED: self._started,
            **self._attrs,
        }
        try:
            writer = NetCDFWriter(self.path, layout, attrs, overwrite=self._overwrite)
        except DiskFullError:
            raise
        except OSError as error:  # not writable here (permissions, a read-only file system)
            raise ScenarioError(f"expected a path where the file can be written, given "
                                f"{str(self.path)!r} ({error.strerror or error})",
                                key="path") from error
        writer.after_disk_full = ("a recording cannot be resumed: free space and run the loop "
                                  "again (the captures so far stay readable in {path})")
        self._writer = BackgroundWriter(writer, max_pending=self._max_pending)

    def _check_open(self) -> None:
        if self._closed is not None:
            raise ScenarioError(f"expected an open recorder, given one closed into "
                                f"{self._closed}", key="record")

    def close(self, error: BaseException | None = None) -> Path | None:
        """Finish the file: ``last`` captures and the final state from the last step's values
        (copied now), then status ``complete``; with ``error``, or when finishing fails (a value
        missing, a full disk), keep what was written, status ``failed`` (``interrupted`` for
        Ctrl-C). Returns the file (None: nothing was captured)."""
        if self._closed is not None:
            return self._closed
        if error is not None:
            return self._abort(error)
        try:
            return self._finish()
        except BaseException as failure:
            self._abort(failure)
            raise

    def _finish(self) -> Path | None:
        if self._last_step is not None:
            step, time = self._last_step, self._last_time
            last = [s for s in self.streams if s.schedule.at_end
                    and self._last_captured.get(s.name) != step]
            plain = [s for s in last if s.stage is None]
            needed = {m for s in plain for m in s.values}
            values = {n: (v() if callable(v) and n in needed else v)
                      for n, v in self._last_values.items()}
            if plain:
                self._capture(plain, step, time, values)
            for stream in last:
                if stream.stage is not None:
                    self._capture([stream], step, time,
                                  self._last_probes.get(stream.stage, {}))
            self._write_held(required=True)
        if self._writer is None:
            self._closed = self.path
            return None
        layout = self._writer.writer.layout
        final = {}
        for spec in layout.fields:
            value = self._last_values.get(spec.name)
            if value is None:
                continue
            if spec.name in self._step_host:  # captured at the last step: that copy
                final[spec.name] = self._step_host[spec.name]
            else:
                final[spec.name] = _to_host(value() if callable(value) else value, spec.dtype)
        self._writer.committed(self._last_step)
        if len(final) == len(layout.fields):
            self._writer.final(self._last_step, self._last_time, final)
        self._closed = self._writer.close({schema.ATTR_FINISHED: _now()})
        return self._closed

    def _abort(self, error: BaseException) -> Path | None:
        """Close the file as stopped by ``error``, with every capture that can be kept."""
        if self._held:
            with contextlib.suppress(Exception):  # keep what can be kept
                self._write_held()
        if self._writer is None:
            self._closed = self.path
            return None
        status = (schema.STATUS_INTERRUPTED if isinstance(error, KeyboardInterrupt)
                  else schema.STATUS_FAILED)
        message = " ".join(f"{type(error).__name__}: {error}".split())
        self._closed = self._writer.abort({schema.ATTR_FINISHED: _now(),
                                           schema.ATTR_STATUS: status,
                                           schema.ATTR_ERROR: message})
        return self._closed

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        kept = self.close(error)
        if isinstance(error, KeyboardInterrupt) and not isinstance(error, RunInterrupted) \
                and kept is not None:
            raise RunInterrupted(str(error) or "SIGINT", kept) from error


def _check_path(path: Path) -> None:
    """Refuse an output that is a directory, or under something that is not one."""
    if path.is_dir():
        raise ScenarioError(f"expected a file to write, given {str(path)!r}, a directory",
                            key="path")
    above = next((p for p in path.parents if os.path.lexists(p)), None)
    if above is not None and not above.is_dir():
        raise ScenarioError(f"expected a path in a directory, given {str(path)!r}, under "
                            f"{str(above)!r}, which is not a directory", key="path")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _versions(library: str) -> str:
    versions = {"simkit": __version__}
    for package in ("numpy", "netCDF4", *{"jax": ("jax",), "torch": ("torch",)}.get(library, ())):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return json.dumps(versions, sort_keys=True)


def record(path: str | os.PathLike, outputs: Mapping[str, Any], *,
           coords: Mapping[str, Any] | None = None,
           dims: Mapping[str, tuple[str, ...]] | None = None,
           units: Mapping[str, str] | None = None,
           long_names: Mapping[str, str] | None = None,
           attrs: Mapping[str, Any] | None = None, time_units: str = "1",
           overwrite: bool = False) -> Recorder:
    """Record values of any loop into one run file, on the schedules of ``outputs``.

    Args:
        path: the NetCDF file to write (made at the first capture).
        outputs: streams as in a scenario: ``{name: {<schedule>, fields: [...], diagnostics:
            [...], summaries: {...}, stage: ...}}``; the names are those the loop passes to
            ``step`` (fields keep their dtype, diagnostics are stored as float64, ``when`` and
            ``while`` read the value they name).
        coords: coordinate values by dimension name, or ``(values, units, long_name)``.
        dims: the dimension names of each value (default ``<name>_dim0``, ...).
        units: CF units by value name (default ``"1"``).
        long_names: CF long names by value name (default the name).
        attrs: extra root attributes.
        time_units: units of the ``time`` the loop passes (default ``"1"``: time is the step).
        overwrite: replace an existing file once the recording finishes.

    Returns:
        A ``Recorder``; use it as a context manager, or call ``close()``.
    """
    return Recorder(path, outputs, coords=coords, dims=dims, units=units, long_names=long_names,
                    attrs=attrs, time_units=time_units, overwrite=overwrite)


__all__ = ["RECORD_STREAM_KEYS", "RecordStream", "Recorder", "parse_stream", "record"]
