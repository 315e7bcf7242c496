"""The one place run files' readers and writers are built: NetCDF4 (the default), or Zarr v3
in an Icechunk repository for an output ending in ``.zarr`` or an ``s3://`` URL (the
``simkit[zarr]`` extra; imported only then)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from simkit.io import netcdf_gradients, schema
from simkit.io._protocol import AdjointStream, GradientVariable, RunReader, RunWriter
from simkit.io.netcdf import NetCDFWriter
from simkit.io.netcdf_reader import NetCDFReader
from simkit.io.zarr_paths import is_zarr

if TYPE_CHECKING:
    import xarray as xr


def open_writer(path: str | os.PathLike[str], layout: schema.RunLayout,
                attrs: Mapping[str, object], *, overwrite: bool = False,
                append: bool = False) -> RunWriter:
    """A writer of the run file at ``path`` with its layout created (see ``NetCDFWriter``,
    and ``simkit.io.zarr.ZarrWriter`` for a Zarr output).

    Args:
        path: where the file goes.
        layout: coordinates, final-state fields and streams.
        attrs: provenance attributes of the root group.
        overwrite: replace an existing file when the run finishes.
        append: continue the existing file at ``path`` (resume).
    """
    if is_zarr(path):
        from simkit.io.zarr import ZarrWriter

        return ZarrWriter(path, layout, attrs, overwrite=overwrite, append=append)
    return NetCDFWriter(path, layout, attrs, overwrite=overwrite, append=append)


def open_reader(path: str | os.PathLike[str]) -> RunReader:
    """A reader of the run file at ``path``, to use as ``with open_reader(path) as reader:``
    (the file is opened on entering)."""
    if is_zarr(path):
        from simkit.io.zarr_reader import ZarrReader

        return ZarrReader(path)
    return NetCDFReader(path)


def run_exists(path: str | os.PathLike[str]) -> bool:
    """Whether something is at ``path`` (a Zarr run: its repository; an S3 one included)."""
    if is_zarr(path):
        from simkit.io.zarr_store import exists

        return exists(path)
    return os.path.lexists(path)


def check_replaceable(path: str | os.PathLike[str], key: str = "output") -> None:
    """Refuse to replace ``path`` (``--overwrite``) unless simkit wrote it.

    Raises:
        ScenarioError: naming the file, what may be replaced, and what to do.
    """
    if is_zarr(path):
        from simkit.io import zarr as zarr_run

        zarr_run.check_replaceable(path, key)
        return
    from simkit.io.netcdf_files import check_replaceable as check_netcdf

    check_netcdf(path, key)


def cut_back(path: str | os.PathLike[str], keep: Mapping[str, int],
             attrs: Mapping[str, object] | None) -> bool:
    """Cut a Zarr run's streams back to their first ``keep[name]`` captures in one commit
    (``attrs`` set); False for a NetCDF file, which is rewritten instead."""
    if not is_zarr(path):
        return False
    from simkit.io.zarr import truncate

    truncate(path, keep, attrs)
    return True


@contextlib.contextmanager
def open_tree(path: str | os.PathLike[str], counts: Mapping[str, int]
              ) -> Iterator[xr.DataTree]:
    """The run at ``path`` as a lazily read ``xarray.DataTree``, each stream cut to its first
    ``counts[name]`` captures. Call it under ``xarray_lock()``."""
    if is_zarr(path):
        from simkit.io.zarr_reader import open_whole_tree as open_zarr_tree

        with open_zarr_tree(path, counts) as tree:
            yield tree
        return
    from simkit.io.netcdf_reader import open_whole_tree

    with open_whole_tree(path, counts) as tree:
        yield tree


def write_gradients(path: str | os.PathLike[str], objective: GradientVariable,
                    gradients: Sequence[GradientVariable], streams: Sequence[AdjointStream],
                    time_units: str, attrs: Mapping[str, object]) -> None:
    """Add the objective, its gradients and adjoint streams to the run file ``path``, whose
    forward run is whole, and mark it complete.

    An adjoint stream has the layout of a forward stream (an unlimited ``step`` dimension,
    ``step`` and ``time`` coordinates, a CRC32 per capture, CF ``units`` and ``long_name`` on
    each variable); its variables hold dL/du_k, in units of the objective per unit of the field.
    It is not listed in the file's ``simkit_streams`` (resume and recover keep to the forward
    streams) but in ``simkit_gradient_streams``.

    Raises:
        ValueError: naming a variable or group that the file already holds.
    """
    netcdf_gradients.write_gradients(path, objective, gradients, streams, time_units, attrs)


def mark_gradients_stopped(path: str | os.PathLike[str], attrs: Mapping[str, object]) -> None:
    """Say in the run file ``path`` how the computation of its gradients stopped (``attrs``:
    status, end time, error); they stay ``pending``."""
    netcdf_gradients.mark_stopped(path, attrs)
