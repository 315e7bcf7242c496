"""The file side of a recorder: host copies of what the due streams keep, checked against what
was first seen; the run file laid out from those values at the first capture and written by a
writer thread."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from time import monotonic
from typing import Any

import numpy as np
import yaml

from simkit._version import __version__
from simkit.driver import LayoutBuilder, Provenance, commit_captures, complete, failed, now
from simkit.errors import DiskFullError, ScenarioError
from simkit.io import BackgroundWriter, check_replaceable, open_writer, schema
from simkit.recorder._streams import RecordStream, parse_stream
from simkit.recorder._values import castable, dtype_name, library_device, shape_dtype, to_host
from simkit.scenario import streams_as_mappings
from simkit.solver._summaries import DTYPES as SUMMARY_DTYPES
from simkit.solver._summaries import Summary

#: The packages whose versions a recording's file records (beside its array library's own).
_PACKAGES = ("numpy", "netCDF4")
#: Captures a loop may take before the file is laid out: those of the first two steps that
#: capture (a stage's probes come from step 1 on).
_WAITING_STEPS = 2
#: Captures, and bytes of them, held on the host before they go to the writer as one block.
_BLOCK_CAPTURES = 1024
_BLOCK_BYTES = 16 << 20


class Captures:
    """Host copies of the values the loop passes, and the run file they go to (laid out at the
    first capture from the shapes and dtypes seen so far)."""

    def __init__(self, path: str | os.PathLike[str], outputs: Mapping[str, Any], *,
                 coords: Mapping[str, Any] | None = None,
                 dims: Mapping[str, tuple[str, ...]] | None = None,
                 units: Mapping[str, str] | None = None,
                 long_names: Mapping[str, str] | None = None,
                 attrs: Mapping[str, Any] | None = None, time_units: str = "1",
                 overwrite: bool = False, max_pending: int = 8,
                 flush_seconds: float = 2.0) -> None:
        """Record values of any loop into one run file, on the schedules of ``outputs``.

        Args:
            path: the NetCDF file to write (made at the first capture).
            outputs: streams as in a scenario: ``{name: {<schedule>, fields: [...],
                diagnostics: [...], summaries: {...}, stage: ...}}`` or ``simkit.Stream``s; the
                names are those the loop passes to ``step`` (fields keep their dtype,
                diagnostics are stored as float64, ``when`` and ``while`` read the value they
                name).
            coords: coordinate values by dimension name, or ``(values, units, long_name)``.
            dims: the dimension names of each value (default ``<name>_dim0``, ...).
            units: CF units by value name (default ``"1"``).
            long_names: CF long names by value name (default the name).
            attrs: extra root attributes.
            time_units: units of the ``time`` the loop passes (default ``"1"``: time is the
                step).
            overwrite: replace an existing file once the recording finishes.
            max_pending: blocks of captures queued for the writer before the loop waits.
            flush_seconds: durability lag: captures go to the writer in blocks, at the first
                ``step`` call this long after they were taken, or at ``flush()`` and the end.
        """
        if not isinstance(outputs, Mapping) or not outputs:
            raise ScenarioError(f"expected a mapping of stream names to streams, given "
                                f"{outputs!r}", key="outputs")
        self.path = Path(path)
        _check_path(self.path, overwrite)
        outputs = streams_as_mappings(outputs, "outputs")  # a simkit.Stream: its mapping
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
        self._flush_seconds = flush_seconds
        self._held_bytes = 0
        self._handed = monotonic()
        self._seen: dict[str, tuple[tuple[int, ...], str]] = {}
        self._castable: set[tuple[np.dtype[Any], str]] = set()
        self._summaries: dict[str, Summary] = {}
        self._library: tuple[str, str] | None = None
        self._writer: BackgroundWriter | None = None
        self._kept: dict[str, tuple[str, ...]] = {}
        self._finals: tuple[schema.VariableSpec, ...] = ()
        self._held: list[tuple[str, int, float, dict[str, np.ndarray]]] = []
        self._last_captured: dict[str, int] = {}
        self._step_host: dict[str, np.ndarray] = {}
        self._closed: Path | None = None
        self._started = now()
        # The loop's side: each stream's schedule state, started now (a wall clock's first
        # interval too), the last step recorded, and the probes of the step under way.
        self._everything = any(stream.everything for stream in self.streams)
        self._states = {s.name: s.schedule.init_state() for s in self.streams}
        for state in self._states.values():
            state.reset()
        self._last_step: int | None = None
        self._last_time = 0.0
        self._last_values: dict[str, Any] = {}
        self._last_probes: dict[str, dict[str, Any]] = {}
        self._stage: str | None = None
        self._probes: dict[str, dict[str, Any]] = {}
        self._probe_copies: dict[str, dict[str, np.ndarray]] = {}
        self._loose: dict[str, Any] = {}

    def _see(self, name: str, value: Any) -> None:
        """Remember the shape and dtype of a value (and the first array's library and device)."""
        if name in self._seen:
            return
        with contextlib.suppress(ScenarioError):  # refused if a stream keeps it (``_capture``)
            self._seen[name] = shape_dtype(name, value)
        if self._library is None:
            self._library = library_device(value)

    def values_from(self, library: str, device: str) -> None:
        """Say which array library and device the loop's values come from, where they reach
        the recorder as host copies (a compiled loop's callbacks); the first word holds."""
        if self._library is None:
            self._library = (library, device)

    # ------------------------------------------------------------------ captures

    def _capture(self, streams: list[RecordStream], step: int, time: float,
                 values: Mapping[str, Any], copies: Mapping[str, np.ndarray] | None = None
                 ) -> None:
        """Take host copies of what ``streams`` keep (a stage's probes: ``copies`` taken when
        they were given) and hand them to the file."""
        copies = copies or {}
        for stream in streams:
            for missing in stream.values:
                if missing not in values and missing not in copies:
                    raise ScenarioError(f"expected the value {missing!r} that stream "
                                        f"{stream.name!r} keeps at step {step}, given "
                                        f"{', '.join(values) or 'none'}",
                                        key=f"outputs.{stream.name}")
        host: dict[str, np.ndarray] = {}
        for stream in streams:
            for name in stream.kept:
                if name not in host:
                    host[name] = self._host(stream, name, values, copies)
            for summary in stream.summaries:
                if summary.name not in host:
                    source = values[summary.field] if summary.field in values \
                        else copies[summary.field]
                    host[summary.name] = self._summarize(stream, summary, source)
        self._held.extend((stream.name, step, time, host) for stream in streams)
        self._last_captured.update((stream.name, step) for stream in streams)
        self._step_host.update(host)
        # Captures go to the writer a block at a time: when enough are held, when the last
        # hand-over is ``flush_seconds`` old (``_hand_over_late``), at ``flush`` and the end.
        self._held_bytes += sum(value.nbytes for value in host.values())
        if self._writer is None or len(self._held) >= _BLOCK_CAPTURES \
                or self._held_bytes >= _BLOCK_BYTES:
            self._write_held()

    def _hand_over_late(self) -> None:
        """Hand the captures held over once the last hand-over is ``flush_seconds`` old."""
        if self._held and monotonic() - self._handed >= self._flush_seconds:
            self._write_held()

    def _host(self, stream: RecordStream, name: str, values: Mapping[str, Any],
              copies: Mapping[str, np.ndarray]) -> np.ndarray:
        """The host copy of value ``name`` as ``stream`` keeps it (a diagnostic as float64)."""
        if name not in self._seen:
            self._seen[name] = shape_dtype(name, copies[name] if name in copies
                                           else values[name])
        shape, dtype = self._seen[name]
        value = copies[name] if name in copies else values[name]
        value = np.array(value) if type(value) is float else to_host(value)
        target = "float64" if name in stream.diagnostics else dtype
        if (value.dtype, target) not in self._castable:  # checked once per dtype
            self._check_kind(stream, name, dtype_name(value), target)
            self._castable.add((value.dtype, target))
        value = value.astype(target, copy=False)
        if value.shape != shape:
            raise ScenarioError(f"expected {name!r} of shape {shape} (as first seen), given "
                                f"shape {value.shape}", key=f"outputs.{stream.name}")
        return value

    def _summarize(self, stream: RecordStream, summary: Summary, source: Any) -> np.ndarray:
        """``summary`` of ``source`` as float64 (a histogram's range and dtype fixed from the
        first value summarized, as ``numpy.histogram`` chooses them)."""
        given = dtype_name(source)
        self._check_kind(stream, summary.field, given, "float64")
        fixed = self._summaries.get(summary.name)
        if fixed is None:
            fixed = replace(summary, dtype=given if given in SUMMARY_DTYPES else "float64")
            fixed = self._summaries[summary.name] = fixed.with_range_of(
                to_host(source) if summary.range is None and summary.kind == "histogram"
                else None)
        return to_host(fixed.compute(source), np.float64)

    def _check_kind(self, stream: RecordStream, name: str, given: str, target: str) -> None:
        """Refuse a value that ``target`` cannot hold without changing its kind (a float field
        given complex values, text), rather than cast it."""
        if not castable(given, target):
            first = " (as first seen)" if name in stream.fields else ""
            raise ScenarioError(f"expected {name!r} as {target}{first} or a type that casts to "
                                f"it without loss of kind, given {given}",
                                key=f"outputs.{stream.name}")

    def _write_held(self, required: bool = False) -> None:
        """Hand the captures taken so far to the writer as one block per stream, laying the file
        out first once every value the streams keep has been seen (a stage's probes appear only
        after step 0)."""
        if self._writer is None:
            unseen: list[tuple[RecordStream, str | None]] = [
                (s, n) for s in self.streams for n in s.values if n not in self._seen]
            unseen += [(s, None) for s in self.streams if s.everything]
            # Captures wait in memory only until the step after the first (a stage's probes
            # come from step 1 on): past that, a value never given is an error, not a leak.
            waiting = len({step for _, step, _, _ in self._held})
            if unseen and not required and waiting <= _WAITING_STEPS:
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
            self._writer = self._open()
        held, self._held, self._held_bytes = self._held, [], 0
        self._handed = monotonic()
        if held:  # the file says how far it is whole once these are on disk
            commit_captures(self._writer, held, self._kept, max(s for _, s, _, _ in held))

    # ------------------------------------------------------------------ the file

    def _open(self) -> BackgroundWriter:
        """Lay the file out from the values seen so far, and start its writer."""
        builder = LayoutBuilder((), self._time_units)
        for name, coord in self._coords.items():
            data, unit, long_name = ((list(coord) + [None, None])[:3]
                                     if isinstance(coord, tuple) else (coord, None, None))
            builder.coordinate(schema.CoordinateSpec(name, np.asarray(data), unit or "1",
                                                     long_name or name))
        for stream in self.streams:
            for name in stream.fields + stream.diagnostics:
                self._variable(builder, name, None if name in stream.fields else "float64")
            summaries = [self._summary_variable(builder, stream, s) for s in stream.summaries]
            builder.stream(stream.name, stream.fields, stream.diagnostics + tuple(summaries),
                           stream.stage)
        layout = builder.layout(list(dict.fromkeys(
            n for s in self.streams if s.stage is None for n in s.fields)))
        self._kept = {s.name: tuple(v.name for v in s.variables) for s in layout.streams}
        self._finals = layout.fields
        library, device = self._library or ("numpy", "cpu")
        attrs = {**Provenance(
            title="simkit recording", source=f"simkit {__version__}, recorder on {library}",
            solver="record", solver_version=__version__, backend=library, device=device,
            dtype=" ".join(sorted({v.dtype for v in layout.fields}) or ["float64"]),
            scenario=yaml.safe_dump({"record": {"outputs": self._outputs}}, sort_keys=False),
            scenario_file=sys.argv[0] if sys.argv and sys.argv[0] else "",
            packages=_PACKAGES, started=self._started).attrs(), **self._attrs}
        try:
            writer = open_writer(self.path, layout, attrs, overwrite=self._overwrite)
        except DiskFullError:
            raise
        except OSError as error:  # not writable here (permissions, a read-only file system)
            raise ScenarioError(f"expected a path where the file can be written, given "
                                f"{str(self.path)!r} ({error.strerror or error})",
                                key="path") from error
        writer.after_disk_full = ("a recording cannot be resumed: free space and run the loop "
                                  "again (the captures so far stay readable in {path})")
        return BackgroundWriter(writer, max_pending=self._max_pending)

    def _variable(self, builder: LayoutBuilder, name: str, dtype: str | None) -> None:
        shape, seen_dtype = self._seen[name]
        dims = self._dims.get(name) or tuple(f"{name}_dim{k}" for k in range(len(shape)))
        if len(dims) != len(shape):
            raise ScenarioError(f"expected {len(shape)} dimension names for {name!r} of shape "
                                f"{shape}, given {dims}", key=f"dims.{name}")
        for dim, size in zip(dims, shape, strict=True):
            known = builder.coordinates.get(dim)
            if known is None:
                builder.coordinate(schema.CoordinateSpec(dim, np.arange(size), "1",
                                                         f"index along dimension {dim}"))
            elif len(known.values) != size:
                raise ScenarioError(f"expected {name!r} to have {len(known.values)} values "
                                    f"along {dim!r} (its coordinate), given {size}",
                                    key=f"dims.{name}")
        builder.variable(schema.VariableSpec(name, dims, self._units.get(name, "1"),
                                             self._long_names.get(name, name),
                                             dtype or seen_dtype))

    def _summary_variable(self, builder: LayoutBuilder, stream: RecordStream,
                          summary: Summary) -> str:
        summary = self._summaries.get(summary.name, summary)
        if summary.kind == "histogram" and summary.range is None:
            raise ScenarioError(f"expected a range for the histogram of {summary.field!r} (or a "
                                "capture to fix it from), given none",
                                key=f"outputs.{stream.name}.summaries")
        units = self._units.get(summary.field, "1")
        for coord in summary.coordinates(units):
            builder.coordinate(schema.CoordinateSpec(coord.name, np.asarray(coord.values),
                                                     coord.units, coord.long_name))
        return builder.variable(schema.VariableSpec(
            summary.name, summary.dims, summary.units(units),
            summary.long_name(self._long_names.get(summary.field)), "float64")).name

    def flush(self) -> None:
        """Wait until every capture so far is in the file, synced and fsync'ed."""
        if self._writer is not None:
            self._write_held()
            self._writer.flush()

    def _close_file(self, step: int, time: float, values: Mapping[str, Any]) -> Path | None:
        """Write the final state (from the last step's ``values``) and close the file as
        complete (laid out by then)."""
        assert self._writer is not None
        final = {}
        for spec in self._finals:
            value = values.get(spec.name)
            if value is None:
                continue
            if spec.name in self._step_host:  # captured at the last step: that copy
                final[spec.name] = self._step_host[spec.name]
            else:
                final[spec.name] = to_host(value() if callable(value) else value, spec.dtype)
        self._writer.committed(step)
        self._closed = complete(self._writer, step, time,
                                final if len(final) == len(self._finals) else None)
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
        self._closed = self._writer.abort(failed(error, status))
        return self._closed


def _check_path(path: Path, overwrite: bool) -> None:
    """Refuse an output that is a directory, under something that is not one, or a file that
    exists (without ``overwrite``: or one simkit did not write)."""
    if path.is_dir():
        raise ScenarioError(f"expected a file to write, given {str(path)!r}, a directory",
                            key="path")
    above = next((p for p in path.parents if os.path.lexists(p)), None)
    if above is not None and not above.is_dir():
        raise ScenarioError(f"expected a path in a directory, given {str(path)!r}, under "
                            f"{str(above)!r}, which is not a directory", key="path")
    if path.exists() and not overwrite:
        raise ScenarioError(f"expected a new file (or overwrite=True), given "
                            f"{str(path)!r}, which exists", key="path")
    if os.path.lexists(path):
        check_replaceable(path, key="path")  # only a file simkit wrote
