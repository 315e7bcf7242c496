"""Writing a run to one NetCDF4 file: final state, streams of captures, provenance.

Each capture is appended along its stream's unlimited ``step`` dimension with a CRC32 of its
contents, synced to the file and fsync'ed, so a run that dies keeps every capture written before;
a capture counts once its ``step`` (written last) is on disk and its checksum matches.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np

from simkit.errors import DiskFullError
from simkit.io import schema

#: Free space kept in reserve beyond the capture about to be written.
DISK_MARGIN_BYTES = 16 << 20


def _create_variables(group: netCDF4.Dataset, variables: tuple[schema.VariableSpec, ...],
                      leading: tuple[str, ...]) -> None:
    for var in variables:
        nc = group.createVariable(var.name, np.dtype(var.dtype), leading + var.dims)
        nc.units = var.units
        nc.long_name = var.long_name
        # CF: step and time are (auxiliary) coordinates of every variable.
        nc.coordinates = (f"{schema.STEP} {schema.TIME}" if not leading
                          else f"{schema.TIME} {schema.CHECKSUM}")


def _create_coordinates(group: netCDF4.Dataset, layout: schema.RunLayout) -> None:
    for coord in layout.coordinates:
        group.createDimension(coord.name, len(coord.values))
        nc = group.createVariable(coord.name, coord.values.dtype, (coord.name,))
        nc[:] = coord.values
        nc.units = coord.units
        nc.long_name = coord.long_name


def capture_checksum(step: int, time: float, arrays: Mapping[str, np.ndarray],
                     names: tuple[str, ...]) -> int:
    """CRC32 of a capture: its step, time and arrays in ``names`` order."""
    crc = zlib.crc32(np.array([step], dtype="i8").tobytes())
    crc = zlib.crc32(np.array([time], dtype="f8").tobytes(), crc)
    for name in names:
        crc = zlib.crc32(np.ascontiguousarray(arrays[name]), crc)
    return crc


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's data to the disk (no library we use does it for us)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_size_limit() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


class NetCDFWriter:
    """Writes one run file.

    A new file is first built under a temporary name beside ``path`` and moved into place once its
    layout is on disk, so a crash never leaves a half-created file at ``path``. When ``path``
    already exists (``overwrite=True``), the old file stays until the run finishes. With
    ``append=True`` an existing run file is continued (resume).

    Args:
        path: where the file goes.
        layout: coordinates, final-state fields and streams.
        attrs: provenance attributes of the root group.
        overwrite: replace an existing file when the run finishes.
        append: continue the existing file at ``path``.
    """

    def __init__(self, path: str | os.PathLike, layout: schema.RunLayout,
                 attrs: Mapping[str, Any], overwrite: bool = False, append: bool = False) -> None:
        self.path = Path(path)
        self.layout = layout
        self._names = {s.name: tuple(v.name for v in s.variables) for s in layout.streams}
        self._bytes = {s.name: sum(_nbytes(v, layout) for v in s.variables)
                       for s in layout.streams}
        if append:
            self._replace_at_close = False
            self._tmp = self.path
            self._ds = netCDF4.Dataset(self.path, "a")
            for key, value in attrs.items():
                self._ds.setncattr(key, value)
            self._ds.setncattr(schema.ATTR_STATUS, schema.STATUS_RUNNING)
            self._counts = {s.name: len(self._ds.groups[s.name].dimensions[schema.STEP_DIM])
                            for s in layout.streams}
            self._ds.sync()
            return
        self._counts = {stream.name: 0 for stream in layout.streams}
        self._replace_at_close = self.path.exists()
        if self._replace_at_close and not overwrite:
            raise FileExistsError(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._ds = netCDF4.Dataset(self._tmp, "w", format=schema.FORMAT)
        try:
            self._define(attrs)
            self._ds.sync()
            fsync_path(self._tmp)
            if not self._replace_at_close:
                os.link(self._tmp, self.path)  # no-clobber: fails if the path appeared meanwhile
                self._tmp.unlink()
        except BaseException:
            self._ds.close()
            self._tmp.unlink(missing_ok=True)
            raise

    @property
    def working_path(self) -> Path:
        """The file being written now (a temporary name beside ``path`` when overwriting)."""
        return self._tmp if self._replace_at_close else self.path

    def count(self, stream: str) -> int:
        """Captures of ``stream`` in the file so far."""
        return self._counts[stream]

    def _define(self, attrs: Mapping[str, Any]) -> None:
        ds, layout = self._ds, self.layout
        ds.setncattr(schema.ATTR_CONVENTIONS, schema.CONVENTIONS)
        for key, value in attrs.items():
            ds.setncattr(key, value)
        ds.setncattr(schema.ATTR_STATUS, schema.STATUS_RUNNING)
        ds.setncattr(schema.ATTR_STREAMS, " ".join(s.name for s in layout.streams))
        _create_coordinates(ds, layout)
        for name, attrs_ in ((schema.STEP, schema.STEP_ATTRS),
                             (schema.TIME, {"long_name": schema.TIME_LONG_NAME,
                                            "units": layout.time_units})):
            var = ds.createVariable(name, "i8" if name == schema.STEP else "f8", ())
            var.setncatts(attrs_)
        _create_variables(ds, layout.fields, ())
        for stream in layout.streams:
            group = ds.createGroup(stream.name)
            _create_coordinates(group, layout)
            group.createDimension(schema.STEP_DIM, None)
            step = group.createVariable(schema.STEP, "i8", (schema.STEP_DIM,))
            step.setncatts(schema.STEP_ATTRS)
            time = group.createVariable(schema.TIME, "f8", (schema.STEP_DIM,))
            time.setncatts({"long_name": schema.TIME_LONG_NAME, "units": layout.time_units})
            crc = group.createVariable(schema.CHECKSUM, "u4", (schema.STEP_DIM,))
            crc.long_name = schema.CHECKSUM_LONG_NAME
            _create_variables(group, stream.variables, (schema.STEP_DIM,))
            group.setncattr(schema.ATTR_STREAM_FIELDS, " ".join(v.name for v in stream.fields))
            group.setncattr(schema.ATTR_STREAM_DIAGNOSTICS,
                            " ".join(v.name for v in stream.diagnostics))

    def _check_space(self, stream: str) -> None:
        # Stop before the disk (or the file size limit) is reached: HDF5 cannot close a file
        # cleanly once its writes fail, so the margin keeps room for the metadata.
        needed = self._bytes[stream] + DISK_MARGIN_BYTES
        free = shutil.disk_usage(self.working_path.parent).free
        limit = _file_size_limit()
        if free < needed or (limit is not None
                             and self.working_path.stat().st_size + needed > limit):
            raise self._disk_full(free)

    def _disk_full(self, free: int) -> DiskFullError:
        intact = ", ".join(f"{name}: {n}" for name, n in self._counts.items()) or "none"
        limit = _file_size_limit()
        margin = max(self._bytes.values(), default=0) + DISK_MARGIN_BYTES
        why = (f"file size limit of {limit} bytes reached" if limit is not None and
               self.working_path.stat().st_size + margin > limit
               else f"{free / 2**20:.1f} MiB free")
        return DiskFullError(f"disk full writing {self.working_path} ({why}); captures intact: "
                             f"{intact}; free space, then `simkit resume {self.path}`")

    def write_capture(self, stream: str, step: int, time: float,
                      arrays: Mapping[str, np.ndarray], sync: bool = True) -> None:
        """Append one capture to ``stream`` (synced to the file unless ``sync=False``)."""
        self._check_space(stream)
        group = self._ds.groups[stream]
        i = self._counts[stream]
        with self._space_errors():
            for name, value in arrays.items():
                group.variables[name][i, ...] = value
            group.variables[schema.TIME][i] = time
            group.variables[schema.CHECKSUM][i] = capture_checksum(step, time, arrays,
                                                                  self._names[stream])
            # The step is written last: a capture counts once its step is on disk.
            group.variables[schema.STEP][i] = step
            if sync:
                self.sync()
        self._counts[stream] = i + 1

    @contextlib.contextmanager
    def _space_errors(self):
        """Turn the libraries' vague errors on a full disk into a DiskFullError."""
        try:
            yield
        except (RuntimeError, OSError) as error:
            margin = 2 * max(self._bytes.values(), default=0) + (1 << 20)
            if _is_space_error(error, self.working_path, margin):
                raise self._disk_full(shutil.disk_usage(self.working_path.parent).free) from error
            raise

    def sync(self) -> None:
        """Flush what was written to the file and fsync it."""
        with self._space_errors():
            self._ds.sync()
            fsync_path(self.working_path)

    def write_final(self, step: int, time: float, arrays: Mapping[str, np.ndarray]) -> None:
        """Write the final state to the root group."""
        for name, value in arrays.items():
            self._ds.variables[name][...] = value
        self._ds.variables[schema.STEP].assignValue(step)
        self._ds.variables[schema.TIME].assignValue(time)

    def close(self, attrs: Mapping[str, Any] | None = None, complete: bool = True) -> Path:
        """Finish the file (status, end attributes), fsync it and move it into place."""
        if attrs:
            for key, value in attrs.items():
                self._ds.setncattr(key, value)
        if complete:
            self._ds.setncattr(schema.ATTR_STATUS, schema.STATUS_COMPLETE)
        self._ds.close()
        working = self.working_path
        fsync_path(working)
        if self._replace_at_close and complete:
            os.replace(self._tmp, self.path)
            return self.path
        return working

    def abort(self, attrs: Mapping[str, Any] | None = None) -> Path:
        """Close after a failure, keeping what was written."""
        with contextlib.suppress(Exception):
            return self.close(attrs, complete=False)
        return self.working_path


def _nbytes(var: schema.VariableSpec, layout: schema.RunLayout) -> int:
    sizes = {c.name: len(c.values) for c in layout.coordinates}
    return int(np.prod([sizes[d] for d in var.dims], dtype=np.int64)) * np.dtype(var.dtype).itemsize


def _is_space_error(error: BaseException, path: Path, margin: int) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return True
    if isinstance(error, RuntimeError) and "HDF error" in str(error):
        limit = _file_size_limit()
        size = path.stat().st_size if path.exists() else 0
        return ((limit is not None and size + margin >= limit)
                or shutil.disk_usage(path.parent).free < DISK_MARGIN_BYTES + margin)
    return False
