"""Reading a run's NetCDF file back (``RunReader``): its streams, whole captures, checkpoints,
final state and attributes. Every netCDF4 call holds the process-wide HDF5 lock; a capture is
whole once its step is written and its checksum matches, so a reader of a file a run is writing
sees only whole captures."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, overload

import netCDF4
import numpy as np

from simkit.io import schema
from simkit.io._lock import hdf5_lock
from simkit.io._protocol import (
    Checkpoint,
    FinalState,
    LiveSummary,
    StreamCaptures,
    StreamSummary,
    VariableInfo,
)
from simkit.io._storage import capture_checksum, whole_prefix

if TYPE_CHECKING:
    import xarray as xr


class NetCDFReader:
    """A run's NetCDF file, open for reading between ``__enter__`` and ``__exit__``.

    Args:
        path: the file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._ds: netCDF4.Dataset | None = None

    def __enter__(self) -> NetCDFReader:
        with hdf5_lock():
            self._ds = netCDF4.Dataset(self.path, "r")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        ds, self._ds = self._ds, None
        if ds is not None:
            with hdf5_lock():
                ds.close()

    @property
    def ds(self) -> netCDF4.Dataset:
        """The open file."""
        if self._ds is None:
            raise RuntimeError(f"{self.path} is not open: read it inside `with`")
        return self._ds

    def _group(self, group: str | None) -> netCDF4.Dataset:
        return self.ds if group is None else self.ds.groups[group]

    def attrs(self) -> dict[str, object]:
        with hdf5_lock():
            return {k: self.ds.getncattr(k) for k in self.ds.ncattrs()}

    def stream_attrs(self, stream: str) -> dict[str, object]:
        with hdf5_lock():
            group = self.ds.groups[stream]
            return {k: group.getncattr(k) for k in group.ncattrs()}

    def status(self) -> str | None:
        with hdf5_lock():
            if schema.ATTR_STATUS not in self.ds.ncattrs():
                return None
            return str(self.ds.getncattr(schema.ATTR_STATUS))

    def committed_step(self) -> int | None:
        with hdf5_lock():
            if schema.ATTR_COMMITTED not in self.ds.ncattrs():
                return None
            return int(self.ds.getncattr(schema.ATTR_COMMITTED))

    def streams(self) -> tuple[str, ...]:
        with hdf5_lock():
            return tuple(str(self.ds.getncattr(schema.ATTR_STREAMS)).split())

    def missing_parts(self) -> str | None:
        with hdf5_lock():
            return _missing_parts(self.ds)

    def grid(self) -> dict[str, int]:
        with hdf5_lock():
            return {name: len(dim) for name, dim in self.ds.dimensions.items()}

    def lengths(self) -> dict[str, int]:
        with hdf5_lock():
            return {name: len(self.ds.groups[name].dimensions[schema.STEP_DIM])
                    for name in str(self.ds.getncattr(schema.ATTR_STREAMS)).split()}

    def whole_counts(self, streams: Iterable[str] | None = None) -> dict[str, int]:
        """Per stream, how many leading captures are whole (written to the end, checksum right).

        The steps are checked all along (a missing or out-of-order step ends the whole prefix,
        so a hole is never bridged); the data only at the tail: captures before the last whole
        one were fsync'ed before it.
        """
        with hdf5_lock():
            names = (str(self.ds.getncattr(schema.ATTR_STREAMS)).split() if streams is None
                     else streams)
            return {name: whole_count(self.ds.groups[name]) for name in names}

    def steps(self, counts: Mapping[str, int | None]) -> dict[str, list[int]]:
        with hdf5_lock():
            return {name: [int(s) for s in self.ds.groups[name].variables[schema.STEP][:n]]
                    for name, n in counts.items()}

    def captures(self, stream: str, count: int | None = None,
                 names: Sequence[str] | None = None) -> StreamCaptures:
        with hdf5_lock():
            group = self.ds.groups[stream]
            variables = group.variables
            if count is None:
                count = whole_count(group)
            if names is None:
                names = [v for v in variables if schema.STEP_DIM in variables[v].dimensions
                         and v not in (schema.STEP, schema.TIME, schema.CHECKSUM)]
            return StreamCaptures(
                np.ma.getdata(variables[schema.STEP][:count]),
                np.ma.getdata(variables[schema.TIME][:count]),
                {name: np.ma.getdata(variables[name][:count, ...]) for name in names})

    def variables(self, group: str | None = None) -> tuple[VariableInfo, ...]:
        with hdf5_lock():
            found = self._group(group).variables
            return tuple(VariableInfo(name, tuple(var.dimensions),
                                      str(var.units) if "units" in var.ncattrs() else None)
                         for name, var in found.items())

    def value(self, name: str, group: str | None = None) -> np.ndarray | None:
        with hdf5_lock():
            value = self._group(group).variables[name][...]
            if np.ndim(value) == 0 and np.ma.is_masked(value):
                return None
            return np.asarray(np.ma.getdata(value))

    def latest_checkpoint(self, field_names: Sequence[str], counts: Mapping[str, int],
                          upto: int | None = None) -> Checkpoint | None:
        best: Checkpoint | None = None
        with hdf5_lock():
            for name, n in counts.items():
                group = self.ds.groups[name]
                if (n == 0 or schema.ATTR_STREAM_STAGE in group.ncattrs()
                        or not all(f in group.variables for f in field_names)):
                    continue
                if upto is not None:
                    steps = np.ma.getdata(group.variables[schema.STEP][:n])
                    n = int(np.searchsorted(steps, upto, side="right"))
                    if n == 0:
                        continue
                step = int(group.variables[schema.STEP][n - 1])
                if best is None or step > best.step:
                    fields = {f: np.ma.getdata(group.variables[f][n - 1, ...]).copy()
                              for f in field_names}
                    best = Checkpoint(name, step, float(group.variables[schema.TIME][n - 1]),
                                      fields, _schedule_state(group, n - 1))
        return best

    def final_state(self, names: Sequence[str]) -> FinalState | None:
        with hdf5_lock():
            ds = self.ds
            if schema.STEP not in ds.variables:
                return None
            ds.set_auto_mask(False)
            try:
                state = {name: np.array(ds.variables[name][...]) for name in names}
                step = int(ds.variables[schema.STEP][...])
                time = float(ds.variables[schema.TIME][...])
            finally:
                ds.set_auto_mask(True)
        return FinalState(step, time, state)

    def live_summary(self) -> LiveSummary:
        with hdf5_lock():
            ds = self.ds
            attrs = {key: ds.getncattr(key) for key in ds.ncattrs()}
            counts = self.whole_counts()
            streams = {name: _stream_summary(ds.groups[name], count)
                       for name, count in counts.items()}
        return {"attrs": attrs, "streams": streams}

    @overload
    def to_xarray(self, group: None = None) -> xr.DataTree: ...

    @overload
    def to_xarray(self, group: str) -> xr.Dataset: ...

    def to_xarray(self, group: str | None = None) -> xr.DataTree | xr.Dataset:
        import xarray as xr

        streams = self.streams()
        counts = self.whole_counts()  # takes the HDF5 lock itself
        names = streams if group is None else (group,)
        parts = {name: _stream_dataset(self.ds.groups[name], counts[name])
                 for name in names}
        if group is not None:
            return parts[group]
        store = xr.backends.NetCDF4DataStore(self.ds)  # type: ignore[no-untyped-call]
        root: xr.Dataset = xr.open_dataset(store).load()
        tree: xr.DataTree = xr.DataTree.from_dict({"/": root,
                                                   **{f"/{k}": v for k, v in parts.items()}})
        return tree


@contextlib.contextmanager
def open_whole_tree(path: str | os.PathLike[str], counts: Mapping[str, int]
                    ) -> Iterator[xr.DataTree]:
    """The NetCDF file at ``path`` as a lazily read ``xarray.DataTree``, each stream group
    ``name`` in ``counts`` cut to its first ``counts[name]`` captures (its whole ones; other
    groups as they are), the file closed on leaving. Call it under ``xarray_lock()``."""
    import xarray as xr

    tree = xr.open_datatree(path)
    try:
        parts = {"/": tree.to_dataset(inherit=False)}
        for name, node in tree.children.items():
            part = node.to_dataset(inherit=False)
            if name in counts:
                part = part.isel({schema.STEP_DIM: slice(0, counts[name])})
            parts[f"/{name}"] = part
        whole: xr.DataTree = xr.DataTree.from_dict(parts)
        yield whole
    finally:
        tree.close()


def _stream_dataset(group: netCDF4.Dataset, count: int) -> xr.Dataset:
    import xarray as xr

    store = xr.backends.NetCDF4DataStore(group)  # type: ignore[no-untyped-call]
    data: xr.Dataset = xr.open_dataset(store)
    loaded: xr.Dataset = data.isel({schema.STEP_DIM: slice(0, count)}).load()
    return loaded


def _stream_summary(group: netCDF4.Dataset, count: int) -> StreamSummary:
    entry: StreamSummary = {"captures": count, "step": None, "time": None, "scalars": {}}
    if count:
        entry["step"] = int(group.variables[schema.STEP][count - 1])
        entry["time"] = float(group.variables[schema.TIME][count - 1])
        for var_name, var in group.variables.items():
            if (var.dimensions == (schema.STEP_DIM,)
                    and var_name not in (schema.STEP, schema.TIME, schema.CHECKSUM)):
                entry["scalars"][var_name] = float(var[count - 1])
    return entry


def _record_ok(group: netCDF4.Dataset, i: int) -> bool:
    step = group.variables[schema.STEP][i]
    if np.ma.is_masked(step):
        return False
    names = tuple(v for v in group.variables
                  if schema.STEP_DIM in group.variables[v].dimensions
                  and v not in (schema.STEP, schema.TIME, schema.CHECKSUM))
    arrays = {}
    for name in names:
        value = group.variables[name][i, ...]
        if np.ma.is_masked(value):
            return False
        arrays[name] = np.ma.getdata(value)
    time = group.variables[schema.TIME][i]
    crc = group.variables[schema.CHECKSUM][i]
    if np.ma.is_masked(time) or np.ma.is_masked(crc):
        return False
    return int(crc) == capture_checksum(int(step), float(time), arrays, names)


def whole_count(group: netCDF4.Dataset) -> int:
    """How many leading captures of a stream's ``group`` are whole (see ``whole_counts``)."""
    steps = np.ma.masked_invalid(np.ma.atleast_1d(group.variables[schema.STEP][:]))
    return whole_prefix(np.ma.getdata(steps), lambda i: _record_ok(group, i),
                        np.ma.getmaskarray(steps))


def _schedule_state(group: netCDF4.Dataset, i: int) -> dict[str, float] | None:
    if schema.SCHEDULE_STATE not in group.variables:
        return None
    var = group.variables[schema.SCHEDULE_STATE]
    slots = str(var.getncattr(schema.ATTR_SCHEDULE_SLOTS)).split()
    return dict(zip(slots, np.ma.getdata(var[i, :]).tolist(), strict=True))


def _missing_parts(ds: netCDF4.Dataset) -> str | None:
    """What a run file should hold and ``ds`` does not, or None."""
    for attr in (schema.ATTR_STREAMS, schema.ATTR_SCENARIO):
        if attr not in ds.ncattrs():
            return f"the attribute {attr!r}"
    # No root step/time check: an unfinished run has no final state yet (they come at the end).
    for name in str(ds.getncattr(schema.ATTR_STREAMS)).split():
        if name not in ds.groups:
            return f"the group {name!r} its streams name"
        group = ds.groups[name]
        if schema.STEP_DIM not in group.dimensions:
            return f"the dimension {schema.STEP_DIM!r} in group {name!r}"
        for var in (schema.STEP, schema.TIME, schema.CHECKSUM):
            along = ((schema.STEP_DIM,), (schema.CHECKSUM_DIM,)) if var == schema.CHECKSUM \
                else ((schema.STEP_DIM,),)
            if var not in group.variables or group.variables[var].dimensions[:1] not in along:
                return f"the variable {name}/{var} along {schema.STEP_DIM!r}"
    return None
