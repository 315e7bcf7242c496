"""Reading a run file after a crash: which captures are whole, the latest full-state checkpoint,
and rewriting the file with only whole captures (``simkit recover``, and before a resume)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np

from simkit.errors import DiskFullError, ScenarioError, SimkitError
from simkit.io import schema
from simkit.io._lock import hdf5_lock, xarray_lock
from simkit.io._temporaries import remove_stale_temporaries
from simkit.io.netcdf import (
    DISK_MARGIN_BYTES,
    _file_size_limit,
    _is_space_error,
    capture_checksum,
    exclusive,
    fsync_path,
    release,
)


@dataclass(frozen=True)
class Checkpoint:
    """A full state found in a run file."""

    stream: str
    step: int
    time: float
    fields: dict[str, np.ndarray]
    #: The schedules' own state at that step, by slot name (None: the file holds none).
    schedules: dict[str, float] | None = None


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


def whole_captures(ds: netCDF4.Dataset) -> dict[str, int]:
    """Per stream, how many leading captures are whole (written to the end, checksum right).

    The steps are checked all along (a missing or out-of-order step ends the whole prefix, so a
    hole is never bridged); the data only at the tail: captures before the last whole one were
    fsync'ed before it.
    """
    with hdf5_lock():
        return {name: _whole(ds.groups[name])
                for name in ds.getncattr(schema.ATTR_STREAMS).split()}


def whole_captures_of(path: str | os.PathLike, stream: str) -> int:
    """How many leading captures of ``stream`` in the file at ``path`` are whole (see
    ``whole_captures``): a reader of one stream sees only these."""
    with hdf5_lock(), netCDF4.Dataset(path, "r") as ds:
        return _whole(ds.groups[stream])


def _whole(group: netCDF4.Dataset) -> int:
    n = _ordered_steps(group)
    while n > 0 and not _record_ok(group, n - 1):
        n -= 1
    return n


def _ordered_steps(group: netCDF4.Dataset) -> int:
    """Length of the leading run of written, increasing steps."""
    steps = np.ma.masked_invalid(np.ma.atleast_1d(group.variables[schema.STEP][:]))
    bad = np.ma.getmaskarray(steps).copy()
    bad[1:] |= np.diff(np.ma.getdata(steps)) <= 0
    return int(np.argmax(bad)) if bad.any() else len(steps)


def latest_checkpoint(path: str | os.PathLike, field_names: Sequence[str],
                      counts: Mapping[str, int], upto: int | None = None) -> Checkpoint | None:
    """The latest whole checkpoint at a step up to ``upto`` (None: any): an end-of-step capture
    holding every field in ``field_names`` (a stream that captures after a stage holds mid-step
    states), if any."""
    best: Checkpoint | None = None
    with hdf5_lock(), netCDF4.Dataset(path, "r") as ds:
        for name, n in counts.items():
            group = ds.groups[name]
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
                best = Checkpoint(name, step, float(group.variables[schema.TIME][n - 1]), fields,
                                  _schedule_state(group, n - 1))
    return best


def _schedule_state(group: netCDF4.Dataset, i: int) -> dict[str, float] | None:
    if schema.SCHEDULE_STATE not in group.variables:
        return None
    var = group.variables[schema.SCHEDULE_STATE]
    slots = str(var.getncattr(schema.ATTR_SCHEDULE_SLOTS)).split()
    return dict(zip(slots, np.ma.getdata(var[i, :]).tolist(), strict=True))


def _copy_group(src: netCDF4.Dataset, dst: netCDF4.Dataset, keep: Mapping[str, int],
                name: str | None, attrs: Mapping[str, Any] | None = None) -> None:
    dst.setncatts({k: src.getncattr(k) for k in src.ncattrs()})
    if attrs:
        dst.setncatts(dict(attrs))
    for dim_name, dim in src.dimensions.items():
        dst.createDimension(dim_name, None if dim.isunlimited() else len(dim))
    n = keep.get(name, 0) if name is not None else None
    for var_name, var in src.variables.items():
        fill = var.getncattr("_FillValue") if "_FillValue" in var.ncattrs() else None
        out = dst.createVariable(var_name, var.dtype, var.dimensions, fill_value=fill)
        out.setncatts({k: var.getncattr(k) for k in var.ncattrs() if k != "_FillValue"})
        if var.dimensions[:1] in ((schema.STEP_DIM,), (schema.CHECKSUM_DIM,)):
            if n:
                out[:n, ...] = var[:n, ...]
        elif var.dimensions:
            out[...] = var[...]
        else:
            value = var[...]
            if not np.ma.is_masked(value):
                out.assignValue(value)
    for group_name, group in src.groups.items():
        _copy_group(group, dst.createGroup(group_name), keep, group_name)


def rewrite(path: str | os.PathLike, keep: Mapping[str, int],
            attrs: Mapping[str, Any] | None = None) -> None:
    """Replace ``path`` by a copy whose streams keep only their first ``keep[name]`` captures
    (and whose root has ``attrs`` set).

    The copy is written beside the file, fsync'ed and moved over it: a crash meanwhile leaves the
    original untouched (and its copy, removed by the next command that writes the file).
    """
    path = Path(path)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.recover.tmp")
    # The copy needs about the file's size again: refuse up front rather than let HDF5 fail
    # with a bare "HDF error" halfway.
    needed = path.stat().st_size + DISK_MARGIN_BYTES
    free = shutil.disk_usage(path.parent).free
    limit = _file_size_limit()
    if free < needed or (limit is not None and path.stat().st_size > limit):
        raise _copy_disk_full(path, tmp, free, limit)
    lock = exclusive(path)  # never under a run still writing the file
    try:
        with hdf5_lock(), netCDF4.Dataset(path, "r") as src, \
                netCDF4.Dataset(tmp, "w", format=schema.FORMAT) as dst:
            _copy_group(src, dst, keep, None, attrs)
        fsync_path(tmp)
        os.replace(tmp, path)
    except (RuntimeError, OSError) as error:
        if _is_space_error(error, tmp, path.stat().st_size):
            raise _copy_disk_full(path, tmp, shutil.disk_usage(path.parent).free,
                                  limit) from None
        raise
    finally:
        release(lock)
        tmp.unlink(missing_ok=True)


def _copy_disk_full(path: Path, tmp: Path, free: int, limit: int | None) -> DiskFullError:
    size = path.stat().st_size
    why = (f"file size limit of {limit} bytes, the file has {size}"
           if limit is not None and size + DISK_MARGIN_BYTES > limit
           else f"{free / 2**20:.1f} MiB free, the copy needs about {size / 2**20:.1f} MiB")
    return DiskFullError(f"disk full writing {tmp} ({why}); {path} is unchanged; free space, "
                         "then run the command again")


def require_run_file(path: str | os.PathLike) -> None:
    """Refuse, with one line, a file that is not a run file simkit wrote (a NetCDF file from
    elsewhere would otherwise fail deep inside with a KeyError).

    Raises:
        ScenarioError: naming the file and what it lacks.
    """
    source = str(path)
    try:
        with hdf5_lock(), netCDF4.Dataset(path, "r") as ds:
            missing = _missing_parts(ds)
    except FileNotFoundError:
        raise ScenarioError("expected an existing run file, given a path that does not exist",
                            source=source) from None
    except OSError as error:
        raise ScenarioError(f"expected a NetCDF file written by simkit, given one that cannot be "
                            f"read ({error})", source=source) from None
    except (RuntimeError, AttributeError, ValueError) as error:  # corrupt metadata (a flipped
        # bit in an attribute's header: AttributeError "Can't open HDF5 attribute")
        raise _unreadable(source, error) from None
    if missing:
        raise ScenarioError(f"expected a NetCDF file written by simkit, given one without "
                            f"{missing}", source=source)


@contextlib.contextmanager
def open_run_tree(path: str | os.PathLike) -> Iterator[Any]:
    """The run file at ``path`` as an xarray ``DataTree``, read under the xarray lock.

    A file that is not a run file, or whose bytes cannot be read (truncated, corrupt, not
    NetCDF), is refused with one line (exit code 2), also when what fails is a read of its data
    inside the ``with`` block.

    Raises:
        ScenarioError: naming the file and why it cannot be read.
    """
    import xarray as xr

    require_run_file(path)
    source = str(path)
    with xarray_lock():
        try:
            tree = xr.open_datatree(path)
        except (OSError, RuntimeError, ValueError) as error:
            raise _unreadable(source, error) from None
        with tree:
            try:
                yield tree
            except (OSError, RuntimeError) as error:
                if isinstance(error, SimkitError):
                    raise
                raise _unreadable(source, error) from None


def _unreadable(source: str, error: BaseException) -> ScenarioError:
    reason = " ".join(str(error).split())[:200]
    return ScenarioError(f"expected a NetCDF file written by simkit, given one that cannot be "
                         f"read ({reason})", source=source)


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


def recover(path: str | os.PathLike) -> dict[str, int]:
    """Drop torn or corrupt trailing captures so every reader sees only whole ones.

    Safe to run twice. Returns the captures kept per stream.
    """
    require_run_file(path)
    release(exclusive(path))  # a running run's last captures are not torn: refuse
    remove_stale_temporaries(Path(path))  # copies of killed recovers and resumes, and runs'
    with hdf5_lock(), netCDF4.Dataset(path, "r") as ds:
        counts = whole_captures(ds)
        lengths = {name: len(ds.groups[name].dimensions[schema.STEP_DIM]) for name in counts}
    if counts != lengths:
        rewrite(path, counts)
    return counts


def read_attrs(path: str | os.PathLike) -> dict[str, object]:
    """The root attributes (provenance) of a run file."""
    with hdf5_lock(), netCDF4.Dataset(path, "r") as ds:
        return {k: ds.getncattr(k) for k in ds.ncattrs()}


def captured_steps(path: str | os.PathLike, counts: Mapping[str, int]) -> dict[str, list[int]]:
    """The steps of the first ``counts[name]`` captures of each stream."""
    with hdf5_lock(), netCDF4.Dataset(path, "r") as ds:
        return {name: [int(s) for s in ds.groups[name].variables[schema.STEP][:n]]
                for name, n in counts.items()}
