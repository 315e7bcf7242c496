"""One stream of a run file as a flat, CF-clean NetCDF file with a single group, for tools that do
not read NetCDF4 groups (cdo, older viewers): ``simkit export FILE --stream NAME -o flat.nc``."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np

from simkit._version import __version__
from simkit.errors import DiskFullError, ScenarioError, SimkitError
from simkit.io import schema
from simkit.io._lock import hdf5_lock
from simkit.io._temporaries import remove_stale_temporaries, temporary_path
from simkit.io.netcdf import _file_size_limit, _is_space_error, check_replaceable, fsync_path
from simkit.io.recover import require_run_file, whole_captures

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


def _stream_group(ds: netCDF4.Dataset, stream: str, source: str) -> netCDF4.Dataset:
    names = ds.getncattr(schema.ATTR_STREAMS).split() \
        if schema.ATTR_STREAMS in ds.ncattrs() else []
    if stream not in names or stream not in ds.groups:
        raise ScenarioError(f"expected one of the file's streams ({', '.join(names) or 'none'})"
                            f", given {stream!r}", source=source, key="--stream")
    return ds.groups[stream]


def _open_run(path: str | os.PathLike) -> netCDF4.Dataset:
    try:
        return netCDF4.Dataset(path, "r")
    except OSError as error:
        raise ScenarioError(f"expected a NetCDF file written by simkit, given one that cannot "
                            f"be read ({error})", source=str(path)) from None


def _attrs(var: netCDF4.Variable) -> dict[str, object]:
    return {k: var.getncattr(k) for k in var.ncattrs() if k not in ("_FillValue", "coordinates")}


def _time_attrs(var: netCDF4.Variable) -> dict[str, object]:
    """CF time coordinate attributes: a time unit needs a reference date, so the elapsed
    simulated time is told as time since an arbitrary one, in the unit's full word (cdo reads
    ``seconds since``, not ``s since``). A time in another unit, or dimensionless (``1``: the
    model's own time unit), is counted as seconds, one model unit to the second, and its own
    unit kept in ``simkit_time_units``: CF and cdo know only calendar time."""
    attrs = _attrs(var)
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


def export_stream(path: str | os.PathLike, stream: str, output: str | os.PathLike,
                  overwrite: bool = False) -> Path:
    """Write the whole captures of ``stream`` to ``output`` as one flat group.

    The stream's ``step`` dimension becomes ``time`` (a CF time coordinate with ``axis: T``),
    ``step`` a variable along it, the checksum is left out (only captures that pass it are
    copied), and the run's provenance and a ``history`` line come along. The file is written
    under a temporary name beside ``output`` and moved into place when whole; temporary files
    there of processes that died are removed first.

    Args:
        path: a run file.
        stream: the stream to export.
        output: the flat file to write.
        overwrite: replace ``output`` if it exists.

    Returns:
        The path written.

    Raises:
        ScenarioError: no such stream, a file simkit did not write or that cannot be read, or
            ``output`` exists.
        DiskFullError: the output's disk filled up (``output`` is then left as it was).
    """
    source, output = str(path), Path(output)
    require_run_file(path)
    if output.exists() and not overwrite:
        raise ScenarioError(f"expected a new output file, given {str(output)!r} that exists; "
                            "pass --overwrite to replace it", key="-o")
    if output.resolve() == Path(path).resolve():
        raise ScenarioError("expected an output other than the run file, given the run file",
                            source=source, key="-o")
    if overwrite and os.path.lexists(output):
        check_replaceable(output, key="-o")  # never a file simkit did not write
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output)
    tmp = temporary_path(output)
    try:
        with hdf5_lock(), _open_run(path) as src:
            group = _stream_group(src, stream, source)
            count = whole_captures(src)[stream]
            with _writing(tmp, output), netCDF4.Dataset(tmp, "w", format=schema.FORMAT) as dst:
                _write_flat(src, group, stream, count, dst, source)
        with _writing(tmp, output):
            fsync_path(tmp)
            if overwrite:
                os.replace(tmp, output)
            else:
                os.link(tmp, output)  # no-clobber: fails if the path appeared meanwhile
    finally:
        tmp.unlink(missing_ok=True)
    return output


@contextlib.contextmanager
def _writing(tmp: Path, output: Path) -> Iterator[None]:
    """A full disk (or file size limit) met while writing ``tmp`` as one line, exit code 4."""
    try:
        yield
    except (RuntimeError, OSError) as error:
        if isinstance(error, SimkitError) or not _is_space_error(error, tmp, COPY_BYTES):
            raise
        limit = _file_size_limit()
        why = (f"file size limit of {limit} bytes reached" if limit is not None
               else f"{shutil.disk_usage(tmp.parent).free / 2**20:.1f} MiB free")
        raise DiskFullError(f"disk full writing {tmp} ({why}); {output} is "
                            f"{'unchanged' if output.exists() else 'not written'}; free space, "
                            "then run the command again") from None


def _read(var: netCDF4.Variable, index: Any, source: str) -> np.ndarray:
    """The run file's data at ``index``; a part that cannot be read (a corrupt chunk) as one
    line."""
    try:
        return np.ma.getdata(var[index])
    except (RuntimeError, OSError) as error:
        raise ScenarioError(f"expected a NetCDF file written by simkit, given one whose "
                            f"{var.group().path.strip('/')}/{var.name} cannot be read ({error})",
                            source=source) from None


def _write_flat(root: netCDF4.Dataset, group: netCDF4.Dataset, stream: str, count: int,
                dst: netCDF4.Dataset, source: str) -> None:
    attrs = {k: root.getncattr(k) for k in root.ncattrs() if k not in _DROPPED_ATTRS}
    attrs.update({k: group.getncattr(k) for k in group.ncattrs() if k not in _DROPPED_ATTRS})
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    line = f"{when}: simkit {__version__} export of stream {stream}"
    history = str(attrs.get(schema.ATTR_HISTORY, ""))
    attrs[schema.ATTR_HISTORY] = f"{history}\n{line}" if history else line
    attrs[schema.ATTR_EXPORTED_STREAM] = stream
    dst.setncatts(attrs)
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
