"""The one place run files' readers and writers are built (NetCDF4 is the format)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from simkit.io import schema
from simkit.io._protocol import RunReader, RunWriter
from simkit.io.netcdf import NetCDFWriter
from simkit.io.netcdf_reader import NetCDFReader, open_tree


def open_writer(path: str | os.PathLike[str], layout: schema.RunLayout,
                attrs: Mapping[str, object], *, overwrite: bool = False,
                append: bool = False) -> RunWriter:
    """A writer of the run file at ``path`` with its layout created (see ``NetCDFWriter``).

    Args:
        path: where the file goes.
        layout: coordinates, final-state fields and streams.
        attrs: provenance attributes of the root group.
        overwrite: replace an existing file when the run finishes.
        append: continue the existing file at ``path`` (resume).
    """
    return NetCDFWriter(path, layout, attrs, overwrite=overwrite, append=append)


def open_reader(path: str | os.PathLike[str]) -> RunReader:
    """A reader of the run file at ``path``, to use as ``with open_reader(path) as reader:``
    (the file is opened on entering)."""
    return NetCDFReader(path)


def open_run_file_tree(path: str | os.PathLike[str]) -> Any:
    """The run file at ``path`` as a lazily read ``xarray.DataTree`` (under ``xarray_lock()``;
    ``simkit.io.open_run_tree`` adds the checks and one-line errors)."""
    return open_tree(path)
