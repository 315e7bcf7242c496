"""One stream of a Zarr run written as the same flat, CF-clean NetCDF file as a NetCDF run's
export (``simkit.io.export``; the layout is ``simkit.io.netcdf_export``'s)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np

from simkit.errors import ScenarioError
from simkit.io import schema
from simkit.io._lock import hdf5_lock
from simkit.io._storage import copy_space_errors
from simkit.io.netcdf_export import COPY_BYTES, flat_attrs, time_attrs
from simkit.io.zarr_reader import ZarrReader
from simkit.io.zarr_store import ZArray, dims, read

#: The run's bookkeeping, not data: left out of the flat file.
_LEFT_OUT = (schema.CHECKSUM, schema.SCHEDULE_STATE)


def write_flat_zarr(path: str, stream: str, tmp: Path, output: Path,
                    why: Callable[[], str]) -> None:
    """Write the whole captures of ``stream`` of the Zarr run at ``path`` to ``tmp`` as one
    flat group (see ``netcdf_export.write_flat``).

    Raises:
        ScenarioError: no such stream.
    """
    with ZarrReader(path) as reader:
        names = reader.streams()
        if stream not in names:
            raise ScenarioError(f"expected one of the file's streams ({', '.join(names) or 'none'})"
                                f", given {stream!r}", source=path, key="--stream")
        count = reader.whole_counts([stream])[stream]
        group = reader.root[stream]
        arrays: dict[str, ZArray] = {name: held for name, held in group.arrays()  # type: ignore[union-attr]
                                     if name not in _LEFT_OUT}
        attrs = flat_attrs(reader.attrs(), dict(group.attrs), stream)
        with hdf5_lock(), copy_space_errors(tmp, output, COPY_BYTES, why), \
                netCDF4.Dataset(tmp, "w", format=schema.FORMAT) as dst:
            _write(dst, attrs, arrays, count)


def _write(dst: netCDF4.Dataset, attrs: Mapping[str, Any], arrays: Mapping[str, ZArray],
           count: int) -> None:
    dst.setncatts(dict(attrs))
    dst.createDimension(schema.TIME, count)
    for held in arrays.values():
        for dim, size in zip(dims(held), held.shape, strict=True):
            if dim != schema.STEP_DIM and dim not in dst.dimensions:
                dst.createDimension(dim, size)
    for name, held in arrays.items():
        along = tuple(schema.TIME if d == schema.STEP_DIM else d for d in dims(held))
        out = dst.createVariable(name, held.dtype, along)
        given = {k: v for k, v in held.attrs.items() if k not in ("_FillValue", "coordinates")}
        out.setncatts(time_attrs(given) if name == schema.TIME else given)
        if schema.STEP_DIM not in dims(held):
            out[...] = read(held)
            continue
        per_capture = max(1, int(np.prod(held.shape[1:], dtype=np.int64)) * held.dtype.itemsize)
        piece = max(1, COPY_BYTES // per_capture)
        for start in range(0, count, piece):
            stop = min(count, start + piece)
            out[start:stop, ...] = read(held, slice(start, stop))
