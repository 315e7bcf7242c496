"""Writing a run to one NetCDF4 file: final state, streams of captures, provenance.

Each capture is appended along its stream's unlimited ``step`` dimension and synced to the file,
so a run that dies keeps every capture written before.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np

from simkit.io import schema


def _create_variables(group: netCDF4.Dataset, variables: tuple[schema.VariableSpec, ...],
                      leading: tuple[str, ...]) -> None:
    for var in variables:
        nc = group.createVariable(var.name, np.dtype(var.dtype), leading + var.dims)
        nc.units = var.units
        nc.long_name = var.long_name
        # CF: step and time are (auxiliary) coordinates of every variable.
        nc.coordinates = f"{schema.STEP} {schema.TIME}" if not leading else schema.TIME


def _create_coordinates(group: netCDF4.Dataset, layout: schema.RunLayout) -> None:
    for coord in layout.coordinates:
        group.createDimension(coord.name, len(coord.values))
        nc = group.createVariable(coord.name, coord.values.dtype, (coord.name,))
        nc[:] = coord.values
        nc.units = coord.units
        nc.long_name = coord.long_name


class NetCDFWriter:
    """Writes one run file.

    The file is first built under a temporary name beside ``path`` and moved into place once its
    layout is on disk, so a crash never leaves a half-created file at ``path``. When ``path``
    already exists (``overwrite=True``), the old file stays until the run finishes.

    Args:
        path: where the file goes.
        layout: coordinates, final-state fields and streams.
        attrs: provenance attributes of the root group.
        overwrite: replace an existing file when the run finishes.
    """

    def __init__(self, path: str | os.PathLike, layout: schema.RunLayout,
                 attrs: Mapping[str, Any], overwrite: bool = False) -> None:
        self.path = Path(path)
        self.layout = layout
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
            _create_variables(group, stream.variables, (schema.STEP_DIM,))
            group.setncattr(schema.ATTR_STREAM_FIELDS, " ".join(v.name for v in stream.fields))
            group.setncattr(schema.ATTR_STREAM_DIAGNOSTICS,
                            " ".join(v.name for v in stream.diagnostics))

    def write_capture(self, stream: str, step: int, time: float,
                      arrays: Mapping[str, np.ndarray]) -> None:
        """Append one capture to ``stream`` and sync it to the file."""
        group = self._ds.groups[stream]
        i = self._counts[stream]
        for name, value in arrays.items():
            group.variables[name][i, ...] = value
        group.variables[schema.TIME][i] = time
        # The step is written last: a capture counts once its step is on disk.
        group.variables[schema.STEP][i] = step
        self._counts[stream] = i + 1
        self._ds.sync()

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
        fd = os.open(working, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if self._replace_at_close and complete:
            os.replace(self._tmp, self.path)
            return self.path
        return working

    def abort(self, attrs: Mapping[str, Any] | None = None) -> Path:
        """Close after a failure, keeping what was written."""
        with contextlib.suppress(Exception):
            return self.close(attrs, complete=False)
        return self.working_path
