"""Reading a run file after a crash: which captures are whole, the latest full-state checkpoint,
and rewriting the file with only whole captures (``simkit recover``, and before a resume)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np

from simkit.io import schema
from simkit.io.netcdf import capture_checksum, fsync_path


@dataclass(frozen=True)
class Checkpoint:
    """A full state found in a run file."""

    stream: str
    step: int
    time: float
    fields: dict[str, np.ndarray]


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

    Only the tail is checked: captures before the last whole one were fsync'ed before it.
    """
    counts = {}
    for name in ds.getncattr(schema.ATTR_STREAMS).split():
        group = ds.groups[name]
        n = len(group.dimensions[schema.STEP_DIM])
        while n > 0 and not _record_ok(group, n - 1):
            n -= 1
        counts[name] = n
    return counts


def latest_checkpoint(path: str | os.PathLike, field_names: Sequence[str],
                      counts: Mapping[str, int]) -> Checkpoint | None:
    """The latest whole capture holding every field in ``field_names``, if any."""
    best: Checkpoint | None = None
    with netCDF4.Dataset(path, "r") as ds:
        for name, n in counts.items():
            group = ds.groups[name]
            if n == 0 or not all(f in group.variables for f in field_names):
                continue
            step = int(group.variables[schema.STEP][n - 1])
            if best is None or step > best.step:
                fields = {f: np.ma.getdata(group.variables[f][n - 1, ...]).copy()
                          for f in field_names}
                best = Checkpoint(name, step, float(group.variables[schema.TIME][n - 1]), fields)
    return best


def _copy_group(src: netCDF4.Dataset, dst: netCDF4.Dataset, keep: Mapping[str, int],
                name: str | None) -> None:
    dst.setncatts({k: src.getncattr(k) for k in src.ncattrs()})
    for dim_name, dim in src.dimensions.items():
        dst.createDimension(dim_name, None if dim.isunlimited() else len(dim))
    n = keep.get(name, 0) if name is not None else None
    for var_name, var in src.variables.items():
        fill = var.getncattr("_FillValue") if "_FillValue" in var.ncattrs() else None
        out = dst.createVariable(var_name, var.dtype, var.dimensions, fill_value=fill)
        out.setncatts({k: var.getncattr(k) for k in var.ncattrs() if k != "_FillValue"})
        if schema.STEP_DIM in var.dimensions:
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


def rewrite(path: str | os.PathLike, keep: Mapping[str, int]) -> None:
    """Replace ``path`` by a copy whose streams keep only their first ``keep[name]`` captures.

    The copy is written beside the file, fsync'ed and moved over it: a crash meanwhile leaves the
    original untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.recover.tmp")
    try:
        with netCDF4.Dataset(path, "r") as src, \
                netCDF4.Dataset(tmp, "w", format=schema.FORMAT) as dst:
            _copy_group(src, dst, keep, None)
        fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def recover(path: str | os.PathLike) -> dict[str, int]:
    """Drop torn or corrupt trailing captures so every reader sees only whole ones.

    Safe to run twice. Returns the captures kept per stream.
    """
    with netCDF4.Dataset(path, "r") as ds:
        counts = whole_captures(ds)
        lengths = {name: len(ds.groups[name].dimensions[schema.STEP_DIM]) for name in counts}
    if counts != lengths:
        rewrite(path, counts)
    return counts


def read_attrs(path: str | os.PathLike) -> dict[str, object]:
    """The root attributes (provenance) of a run file."""
    with netCDF4.Dataset(path, "r") as ds:
        return {k: ds.getncattr(k) for k in ds.ncattrs()}


def captured_steps(path: str | os.PathLike, counts: Mapping[str, int]) -> dict[str, list[int]]:
    """The steps of the first ``counts[name]`` captures of each stream."""
    with netCDF4.Dataset(path, "r") as ds:
        return {name: [int(s) for s in ds.groups[name].variables[schema.STEP][:n]]
                for name, n in counts.items()}
