"""Files that gather several run files (a sweep's members along one axis): the members read as
lazily loaded ``xarray.DataTree`` objects, the combined groups written as one NetCDF4 file. Call
both under ``xarray_lock()``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import xarray as xr


@contextlib.contextmanager
def open_member_trees(paths: Sequence[str | os.PathLike[str]]) -> Iterator[list[xr.DataTree]]:
    """The files at ``paths`` as lazily read ``xarray.DataTree`` objects (every group), closed
    on leaving."""
    import xarray as xr

    trees: list[xr.DataTree] = []
    try:
        for path in paths:
            trees.append(xr.open_datatree(path))
        yield trees
    finally:
        for tree in trees:
            tree.close()


def write_groups(groups: Mapping[str, xr.Dataset], output: Path) -> None:
    """Write ``groups`` (``"/"`` the root, ``"/name"`` a group) as the NetCDF4 file ``output``,
    through a temporary beside it moved in when whole."""
    import xarray as xr

    tmp = output.with_name(f".{output.name}.tmp")
    xr.DataTree.from_dict(dict(groups)).to_netcdf(tmp)
    os.replace(tmp, output)
