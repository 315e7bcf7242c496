"""One stream of a run file as a flat, CF-clean NetCDF file with a single group, for tools that do
not read NetCDF4 groups (cdo, older viewers): ``simkit export FILE --stream NAME -o flat.nc``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from simkit.errors import ScenarioError
from simkit.io._storage import copy_space_errors, file_size_limit, fsync_path
from simkit.io._temporaries import remove_stale_temporaries, temporary_path
from simkit.io.netcdf_export import COPY_BYTES, REFERENCE_DATE, write_flat
from simkit.io.netcdf_files import check_replaceable
from simkit.io.recover import require_run_file
from simkit.io.zarr_paths import is_zarr, location

__all__ = ["COPY_BYTES", "REFERENCE_DATE", "export_stream"]


def export_stream(path: str | os.PathLike[str], stream: str, output: str | os.PathLike[str],
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
        if is_zarr(path):
            from simkit.io.netcdf_flat import write_flat_zarr

            write_flat_zarr(location(path), stream, tmp, output, lambda: _why(tmp))
        else:
            write_flat(path, stream, tmp, output, lambda: _why(tmp))
        with copy_space_errors(tmp, output, COPY_BYTES, lambda: _why(tmp)):
            fsync_path(tmp)
            if overwrite:
                os.replace(tmp, output)
            else:
                os.link(tmp, output)  # no-clobber: fails if the path appeared meanwhile
    finally:
        tmp.unlink(missing_ok=True)
    return output


def _why(tmp: Path) -> str:
    """What ran out writing ``tmp``: the file size limit, or the disk's free space."""
    limit = file_size_limit()
    return (f"file size limit of {limit} bytes reached" if limit is not None
            else f"{shutil.disk_usage(tmp.parent).free / 2**20:.1f} MiB free")
