"""Gradients written into a run's NetCDF file: the objective and its derivatives in the root
group, adjoint streams as groups laid out as forward streams (see ``simkit.io.write_gradients``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import netCDF4
import numpy as np

from simkit.io import schema
from simkit.io._lock import hdf5_lock
from simkit.io._protocol import AdjointStream, GradientVariable
from simkit.io._storage import capture_checksum, fsync_path
from simkit.io.netcdf_layout import create_capture_axis


def write_gradients(path: str | os.PathLike[str], objective: GradientVariable,
                    gradients: Sequence[GradientVariable], streams: Sequence[AdjointStream],
                    time_units: str, attrs: Mapping[str, object]) -> None:
    """Add the objective, its gradients and adjoint streams to the run file ``path``, whose
    forward run is whole, and mark it complete.

    Raises:
        ValueError: naming a variable or group that the file already holds.
    """
    with hdf5_lock(), netCDF4.Dataset(path, "a") as ds:
        taken = [v.name for v in (objective, *gradients) if v.name in ds.variables]
        taken += [s.name for s in streams if s.name in ds.groups]
        if taken:
            raise ValueError(f"gradients: expected names the file {os.fspath(path)} does not "
                             f"hold yet, given {taken[0]!r} again")
        for var in (objective, *gradients):
            nc = ds.createVariable(var.name, var.value.dtype, var.dims)
            nc.setncatts({"units": var.units, "long_name": var.long_name})
            nc[...] = var.value
        for stream in streams:
            _write_stream(ds, stream, time_units)
            ds.groups[stream.name].setncattr(schema.ATTR_ADJOINT_OF, objective.long_name)
        ds.setncatts(dict(attrs))
        ds.setncattr(schema.ATTR_GRADIENT_STREAMS, " ".join(s.name for s in streams))
        # Complete only now, with everything above in the file.
        ds.setncatts({schema.ATTR_GRADIENTS: schema.GRADIENTS_WRITTEN,
                      schema.ATTR_STATUS: schema.STATUS_COMPLETE})
        if schema.ATTR_ERROR in ds.ncattrs():  # of an earlier gradient phase that failed
            ds.delncattr(schema.ATTR_ERROR)
        ds.sync()
    fsync_path(path)


def mark_stopped(path: str | os.PathLike[str], attrs: Mapping[str, object]) -> None:
    """Say in the run file ``path`` how the computation of its gradients stopped (``attrs``:
    status, end time, error); they stay ``pending``."""
    with hdf5_lock(), netCDF4.Dataset(path, "a") as ds:
        ds.setncatts(dict(attrs))
        ds.sync()
    fsync_path(path)


def _write_stream(ds: netCDF4.Dataset, stream: AdjointStream, time_units: str) -> None:
    group = ds.createGroup(stream.name)
    # The grid coordinates again, as every forward stream group holds them.
    for dim in dict.fromkeys(d for v in stream.variables for d in v.dims):
        group.createDimension(dim, len(ds.dimensions[dim]))
        if dim in ds.variables:
            source = ds.variables[dim]
            coord = group.createVariable(dim, source.dtype, (dim,))
            coord.setncatts({k: source.getncattr(k) for k in source.ncattrs()})
            coord[:] = source[:]
    step, time, crc = create_capture_axis(group, time_units)
    for var in stream.variables:
        nc = group.createVariable(var.name, var.value.dtype, (schema.STEP_DIM, *var.dims))
        nc.setncatts({"units": var.units, "long_name": var.long_name,
                      "coordinates": schema.TIME})
        nc[...] = var.value
    names = tuple(v.name for v in stream.variables)
    values = {v.name: v.value for v in stream.variables}
    crc[:] = np.asarray([capture_checksum(int(s), float(t), {k: v[i] for k, v in values.items()},
                                          names)
                         for i, (s, t) in enumerate(zip(stream.steps, stream.times, strict=True))],
                        dtype=np.uint32)
    time[:] = np.asarray(stream.times, dtype=np.float64)
    step[:] = np.asarray(stream.steps, dtype=np.int64)
    group.setncattr(schema.ATTR_STREAM_FIELDS, " ".join(names))
    group.setncattr(schema.ATTR_STREAM_DIAGNOSTICS, "")
    group.setncattr("coordinates", schema.CHECKSUM)
