"""What the rest of simkit writes runs through and reads them back through, whatever the file
format: ``RunWriter`` (one run's file being written), ``CaptureWriter`` (what a run hands its
captures to: a writer thread in front of a ``RunWriter``) and ``RunReader`` (a run file read
back). The NetCDF implementations are ``simkit.io.netcdf.NetCDFWriter`` and
``simkit.io.netcdf_reader.NetCDFReader``; ``simkit.io.open_writer``/``open_reader`` build them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TypedDict, overload

import numpy as np

from simkit.io import schema

if TYPE_CHECKING:
    import xarray as xr

#: A file name as the functions of this package take it.
StrPath = str | os.PathLike[str]


@dataclass(frozen=True)
class Checkpoint:
    """A full state found in a run file."""

    stream: str
    step: int
    time: float
    fields: dict[str, np.ndarray]
    #: The schedules' own state at that step, by slot name (None: the file holds none).
    schedules: dict[str, float] | None = None


@dataclass(frozen=True)
class FinalState:
    """The final state a finished run wrote: its step, time and fields."""

    step: int
    time: float
    fields: dict[str, np.ndarray]


@dataclass(frozen=True)
class VariableInfo:
    """A variable of a run file as a reader describes it (its data aside)."""

    name: str
    dims: tuple[str, ...]
    units: str | None


@dataclass(frozen=True)
class StreamCaptures:
    """Whole captures of one stream: their steps, times and arrays (captures along axis 0)."""

    steps: np.ndarray
    times: np.ndarray
    arrays: dict[str, np.ndarray]


class StreamSummary(TypedDict):
    """What a live view shows of one stream: its whole captures, the last one's step and time
    (None: no capture yet) and the last value of each scalar variable."""

    captures: int
    step: int | None
    time: float | None
    scalars: dict[str, float]


class LiveSummary(TypedDict):
    """What a live view shows of a run file: its root attributes and each stream's summary."""

    attrs: dict[str, object]
    streams: dict[str, StreamSummary]


@dataclass(frozen=True)
class GradientVariable:
    """A derivative to write: its variable name, dimensions, CF units, long name and value."""

    name: str
    dims: tuple[str, ...]
    units: str
    long_name: str
    value: np.ndarray


@dataclass(frozen=True)
class AdjointStream:
    """Adjoint captures: the stream's name, steps, times and variables ``(step, *dims)``."""

    name: str
    steps: np.ndarray
    times: np.ndarray
    variables: tuple[GradientVariable, ...]


class RunWriter(Protocol):
    """One run's file while it is written: its layout is created when the writer is made (see
    ``simkit.io.open_writer``), captures are appended with their checksums, the step up to
    which every capture is on disk is committed, the final state is written at the end and the
    file is closed with a status."""

    path: Path
    layout: schema.RunLayout
    #: The file that holds the run if it stops unfinished.
    partial_path: Path
    #: What a full disk's message tells the user to do (``{path}``: the file kept).
    after_disk_full: str

    def check_space(self, streams: Iterable[str]) -> None: ...

    def write_capture(self, stream: str, step: int, time: float,
                      arrays: Mapping[str, np.ndarray], sync: bool = True) -> None: ...

    def write_block(self, stream: str, steps: Sequence[int], times: Sequence[float],
                    arrays: Mapping[str, np.ndarray]) -> None: ...

    def sync(self) -> None: ...

    def committed(self, step: int) -> None: ...

    def write_final(self, step: int, time: float, arrays: Mapping[str, np.ndarray]) -> None: ...

    def close(self, attrs: Mapping[str, object] | None = None, complete: bool = True) -> Path: ...

    def abort(self, attrs: Mapping[str, object] | None = None) -> Path: ...


class CaptureWriter(Protocol):
    """What a run hands its captures to (``simkit.io.BackgroundWriter`` in front of a
    ``RunWriter``, or a process's stand-in that writes nothing)."""

    written: int

    @property
    def partial_path(self) -> Path: ...

    def capture(self, stream: str, step: int, time: float,
                arrays: Mapping[str, np.ndarray]) -> None: ...

    def capture_many(self, captures: list[tuple[str, int, float, Mapping[str, np.ndarray]]]
                     ) -> None: ...

    def capture_blocks(self, blocks: list[tuple[str, list[int], list[float],
                                                Mapping[str, np.ndarray]]]) -> None: ...

    def committed(self, step: int) -> None: ...

    def final(self, step: int, time: float, arrays: Mapping[str, np.ndarray]) -> None: ...


class RunReader(Protocol):
    """A run file read back, open between ``__enter__`` and ``__exit__`` (one consistent look
    at a file a run may be writing). Only whole captures count: written to the end, checksum
    right."""

    path: Path

    def __enter__(self) -> RunReader: ...

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None: ...

    def attrs(self) -> dict[str, object]:
        """The root attributes: provenance, status, committed step."""
        ...

    def missing_parts(self) -> str | None:
        """What a run file should hold and this one does not, or None."""
        ...

    def streams(self) -> tuple[str, ...]:
        """The run's (forward) streams."""
        ...

    def grid(self) -> dict[str, int]:
        """The sizes of the root group's dimensions."""
        ...

    def lengths(self) -> dict[str, int]:
        """Per stream, the captures written (whole or not)."""
        ...

    def whole_counts(self, streams: Iterable[str] | None = None) -> dict[str, int]:
        """Per stream (default: every one), how many leading captures are whole."""
        ...

    def steps(self, counts: Mapping[str, int | None]) -> dict[str, list[int]]:
        """The steps of the first ``counts[name]`` captures of each stream (None: all)."""
        ...

    def captures(self, stream: str, count: int | None = None,
                 names: Sequence[str] | None = None) -> StreamCaptures:
        """The first ``count`` captures of ``stream`` (None: its whole ones), with the
        variables ``names`` (None: every captured one)."""
        ...

    def stream_attrs(self, stream: str) -> dict[str, object]:
        """A stream's own attributes (its fields, diagnostics, stage)."""
        ...

    def variables(self, group: str | None = None) -> tuple[VariableInfo, ...]:
        """The variables of a stream's group (None: the root group)."""
        ...

    def value(self, name: str, group: str | None = None) -> np.ndarray | None:
        """A variable's whole value (None: a scalar written as missing)."""
        ...

    def committed_step(self) -> int | None:
        """The step up to which every capture due is on disk (None: the file does not say)."""
        ...

    def latest_checkpoint(self, field_names: Sequence[str], counts: Mapping[str, int],
                          upto: int | None = None) -> Checkpoint | None:
        """The latest whole end-of-step capture holding every field in ``field_names`` at a
        step up to ``upto`` (None: any), among the first ``counts[name]`` of each stream."""
        ...

    def final_state(self, names: Sequence[str]) -> FinalState | None:
        """The final state of the fields ``names`` (None: the run has not written it)."""
        ...

    def status(self) -> str | None:
        """The run's status (``schema.STATUS_*``)."""
        ...

    def live_summary(self) -> LiveSummary:
        """Root attributes, and per stream the whole captures, the last step and time and the
        last value of each scalar variable (see ``simkit.io.live_summary``)."""
        ...

    @overload
    def to_xarray(self, group: None = None) -> xr.DataTree: ...

    @overload
    def to_xarray(self, group: str) -> xr.Dataset: ...

    def to_xarray(self, group: str | None = None) -> xr.DataTree | xr.Dataset:
        """Whole captures loaded into memory: a stream as an ``xarray.Dataset``, or (None) the
        file as an ``xarray.DataTree``. Call it under ``xarray_lock()``."""
        ...
