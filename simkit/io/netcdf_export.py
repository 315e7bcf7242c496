"""One stream of a run's NetCDF file written as a flat, CF-clean NetCDF file with a single group
(see ``simkit.io.export``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np

from simkit._version import __version__
from simkit.errors import ScenarioError
from simkit.io import schema
from simkit.io._lock import hdf5_lock
from simkit.io._storage import copy_space_errors, unreadable
from simkit.io.netcdf_reader import whole_count

#: Captures are copied in pieces of about this many bytes, so memory stays bounded.
COPY_BYTES = 64 << 20

#: The made-up date at which a simulation's time 0 is put in the exported file (CF time needs one).
REFERENCE_DATE = "1970-01-01 00:00:00"
#: Time units as a run file may write them, and the UDUNITS word CF tools and cdo read.
_TIME_UNITS = {"s": "seconds", "sec": "seconds", "second": "seconds", "seconds": "seconds",
               "min": "minutes", "minute": "minutes", "minutes": "minutes",
               "h": "hours", "hr": "hours", "hour": "hours", "hours": "hours",
               "d": "days", "day": "days", "days": "days"}

# Root attributes that describe the run file's own layout, not the data.
_DROPPED_ATTRS = (schema.ATTR_STREAMS, "coordinates")


def write_flat(path: str | os.PathLike[str], stream: str, tmp: Path, output: Path,
               why: Callable[[], str]) -> None:
    """Write the whole captures of ``stream`` of the run file ``path`` to ``tmp`` as one flat
    group; a full disk is told as one that leaves ``output`` as it was (``why()``: the space
    or limit that ran out).

    Raises:
        ScenarioError: no such stream, or a part of the file that cannot be read.
    """
    source = str(path)
    with hdf5_lock(), _open_run(path) as src:
        group = _stream_group(src, stream, source)
        count = whole_count(group)
        with copy_space_errors(tmp, output, COPY_BYTES, why), \
                netCDF4.Dataset(tmp, "w", format=schema.FORMAT) as dst:
            _write_flat(src, group, stream, count, dst, source)


def _stream_group(ds: netCDF4.Dataset, stream: str, source: str) -> netCDF4.Dataset:
    names = ds.getncattr(schema.ATTR_STREAMS).split() \
        if schema.ATTR_STREAMS in ds.ncattrs() else []
    if stream not in names or stream not in ds.groups:
        raise ScenarioError(f"expected one of the file's streams ({', '.join(names) or 'none'})"
                            f", given {stream!r}", source=source, key="--stream")
    return ds.groups[stream]


def _open_run(path: str | os.PathLike[str]) -> netCDF4.Dataset:
    try:
        return netCDF4.Dataset(path, "r")
    except OSError as error:
        raise unreadable(str(path), error) from None


def _attrs(var: netCDF4.Variable[Any]) -> dict[str, object]:
    return {k: var.getncattr(k) for k in var.ncattrs() if k not in ("_FillValue", "coordinates")}


def _time_attrs(var: netCDF4.Variable[Any]) -> dict[str, object]:
    return time_attrs(_attrs(var))


def time_attrs(given: Mapping[str, object]) -> dict[str, object]:
    """CF time coordinate attributes: a time unit needs a reference date, so the elapsed
    simulated time is told as time since an arbitrary one, in the unit's full word (cdo reads
    ``seconds since``, not ``s since``). A time in another unit, or dimensionless (``1``: the
    model's own time unit), is counted as seconds, one model unit to the second, and its own
    unit kept in ``simkit_time_units``: CF and cdo know only calendar time."""
    attrs = dict(given)
    units = str(attrs.get("units", "1")).strip()
    name = str(attrs.get("long_name", "time"))
    word = _TIME_UNITS.get(units)
    if word is None:
        attrs["simkit_time_units"] = units
        word = "seconds"
        name = f"{name} in the run's own unit {units!r}, counted here as seconds"
    attrs["units"] = f"{word} since {REFERENCE_DATE}"
    attrs["calendar"] = "proleptic_gregorian"
    attrs["long_name"] = f"{name} (since the start, which is dated {REFERENCE_DATE} for the " \
                         "calendar's sake)"
    attrs["standard_name"] = "time"
    attrs["axis"] = "T"
    return attrs


def _read(var: netCDF4.Variable[Any], index: Any, source: str) -> np.ndarray:
    """The run file's data at ``index``; a part that cannot be read (a corrupt chunk) as one
    line."""
    try:
        return np.ma.getdata(var[index])
    except (RuntimeError, OSError) as error:
        raise ScenarioError(f"expected a NetCDF file written by simkit, given one whose "
                            f"{var.group().path.strip('/')}/{var.name} cannot be read ({error})",
                            source=source) from None


def _flat_attrs(root: netCDF4.Dataset, group: netCDF4.Dataset, stream: str) -> dict[str, Any]:
    return flat_attrs({k: root.getncattr(k) for k in root.ncattrs()},
                      {k: group.getncattr(k) for k in group.ncattrs()}, stream)


def flat_attrs(root: Mapping[str, Any], group: Mapping[str, Any], stream: str
               ) -> dict[str, Any]:
    """The run's and the stream's attributes, with a ``history`` line for the export."""
    attrs = {k: v for k, v in root.items() if k not in _DROPPED_ATTRS}
    attrs.update({k: v for k, v in group.items() if k not in _DROPPED_ATTRS})
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    line = f"{when}: simkit {__version__} export of stream {stream}"
    history = str(attrs.get(schema.ATTR_HISTORY, ""))
    attrs[schema.ATTR_HISTORY] = f"{history}\n{line}" if history else line
    attrs[schema.ATTR_EXPORTED_STREAM] = stream
    return attrs


def _write_flat(root: netCDF4.Dataset, group: netCDF4.Dataset, stream: str, count: int,
                dst: netCDF4.Dataset, source: str) -> None:
    dst.setncatts(_flat_attrs(root, group, stream))
    dst.createDimension(schema.TIME, count)
    # The checksum and the schedules' state are the run's bookkeeping, not data.
    left_out = (schema.CHECKSUM, schema.SCHEDULE_STATE)
    for name, dim in group.dimensions.items():
        if name not in (schema.STEP_DIM, schema.SCHEDULE_SLOT_DIM, schema.CHECKSUM_DIM):
            dst.createDimension(name, len(dim))
    captured = [name for name, var in group.variables.items()
                if schema.STEP_DIM in var.dimensions and name not in left_out]
    # No `coordinates` attribute naming `step`: cdo takes only spatial auxiliary coordinates
    # ("Coordinates variable step can't be assigned"); `step` is a variable along `time`.
    for name, var in group.variables.items():
        if name in left_out:
            continue
        dims = tuple(schema.TIME if d == schema.STEP_DIM else d for d in var.dimensions)
        out = dst.createVariable(name, var.dtype, dims)
        out.setncatts(_attrs(var) if name != schema.TIME else _time_attrs(var))
        if name not in captured:
            out[...] = _read(var, ..., source)
    for name in captured:
        var, out = group.variables[name], dst.variables[name]
        per_capture = max(1, int(np.prod(var.shape[1:], dtype=np.int64)) * var.dtype.itemsize)
        piece = max(1, COPY_BYTES // per_capture)
        for start in range(0, count, piece):
            stop = min(count, start + piece)
            out[start:stop, ...] = _read(var, slice(start, stop), source)
