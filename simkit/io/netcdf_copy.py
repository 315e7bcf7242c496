"""Copying a run's NetCDF file with only its first captures of each stream (recover, and the
cut before a resume)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import netCDF4
import numpy as np

from simkit.io import schema
from simkit.io._lock import hdf5_lock


def copy_run(path: Path, tmp: Path, keep: Mapping[str, int],
             attrs: Mapping[str, object] | None = None) -> None:
    """Write to ``tmp`` a copy of the run file ``path`` whose streams keep only their first
    ``keep[name]`` captures (and whose root has ``attrs`` set)."""
    with hdf5_lock(), netCDF4.Dataset(path, "r") as src, \
            netCDF4.Dataset(tmp, "w", format=schema.FORMAT) as dst:
        _copy_group(src, dst, keep, None, attrs)


def _copy_group(src: netCDF4.Dataset, dst: netCDF4.Dataset, keep: Mapping[str, int],
                name: str | None, attrs: Mapping[str, object] | None = None) -> None:
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
