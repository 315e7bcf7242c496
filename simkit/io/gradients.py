"""Gradients in a run file: adjoint streams beside the forward ones, derivatives of the objective
with respect to parameters and initial fields in the root group.

An adjoint stream has the layout of a forward stream (an unlimited ``step`` dimension, ``step``
and ``time`` coordinates, a CRC32 per capture, CF ``units`` and ``long_name`` on each variable);
its variables hold dL/du_k, in units of the objective per unit of the field. It is not listed in
the file's ``simkit_streams`` (resume and recover keep to the forward streams) but in
``simkit_gradient_streams``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import netCDF4
import numpy as np

from simkit.io import schema
from simkit.io._lock import hdf5_lock
from simkit.io.netcdf import capture_checksum, fsync_path

ATTR_GRADIENT_STREAMS = "simkit_gradient_streams"
ATTR_OBJECTIVE = "simkit_objective"
ATTR_CHECKPOINT = "simkit_checkpoint"
#: How many of the run's own checkpoints the backward pass started its segments from (0: it ran
#: the steps forward again itself).
ATTR_REUSED = "simkit_checkpoints_reused"
ATTR_ADJOINT_OF = "simkit_adjoint_of"
#: Root attribute of a run with an objective: ``awaited`` from the file's creation while its
#: forward run goes on (a file stopped then is not a plain run, whatever its scenario says),
#: ``pending`` once its forward run is whole and until its gradients are written (the status
#: says ``running``, or how the gradients stopped; ``simkit resume`` computes them), ``written``
#: with status ``complete`` after.
ATTR_GRADIENTS = "simkit_gradients"
GRADIENTS_AWAITED, GRADIENTS_PENDING, GRADIENTS_WRITTEN = "awaited", "pending", "written"
#: Root variable of the objective's value.
OBJECTIVE = "objective"
#: Prefix of the root variables holding dL/d(parameter) and dL/d(initial field).
GRADIENT_PREFIX = "gradient_"


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


def write_gradients(path: str | os.PathLike, objective: GradientVariable,
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
            ds.groups[stream.name].setncattr(ATTR_ADJOINT_OF, objective.long_name)
        ds.setncatts(dict(attrs))
        ds.setncattr(ATTR_GRADIENT_STREAMS, " ".join(s.name for s in streams))
        # Complete only now, with everything above in the file.
        ds.setncatts({ATTR_GRADIENTS: GRADIENTS_WRITTEN,
                      schema.ATTR_STATUS: schema.STATUS_COMPLETE})
        if schema.ATTR_ERROR in ds.ncattrs():  # of an earlier gradient phase that failed
            ds.delncattr(schema.ATTR_ERROR)
        ds.sync()
    fsync_path(path)


def mark_stopped(path: str | os.PathLike, attrs: Mapping[str, object]) -> None:
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
    group.createDimension(schema.STEP_DIM, None)
    step = group.createVariable(schema.STEP, "i8", (schema.STEP_DIM,))
    step.setncatts(schema.STEP_ATTRS)
    time = group.createVariable(schema.TIME, "f8", (schema.STEP_DIM,))
    time.setncatts({"standard_name": "time", "axis": "T", "long_name": schema.TIME_LONG_NAME,
                    "units": time_units})
    group.createDimension(schema.CHECKSUM_DIM, None)
    crc = group.createVariable(schema.CHECKSUM, "u4", (schema.CHECKSUM_DIM,))
    crc.setncatts(schema.CHECKSUM_ATTRS)
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
