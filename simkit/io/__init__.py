"""Output: capture records to one NetCDF4 file per run (or a Zarr v3 store in an Icechunk
repository, locally or in S3: ``simkit[zarr]``), and reading them back.

Runs write through a ``RunWriter`` and read back through a ``RunReader`` (``open_writer`` and
``open_reader`` build them); only the ``simkit.io.netcdf*`` modules know the NetCDF format and
only ``simkit.io.zarr*`` Zarr's.
"""

from simkit.io import schema
from simkit.io._factory import (
    check_replaceable,
    mark_gradients_stopped,
    open_reader,
    open_writer,
    run_exists,
    write_gradients,
)
from simkit.io._lock import xarray_lock
from simkit.io._protocol import (
    AdjointStream,
    CaptureWriter,
    GradientVariable,
    RunReader,
    RunWriter,
)
from simkit.io._storage import exclusive, release
from simkit.io.background import BackgroundWriter
from simkit.io.export import export_stream
from simkit.io.live import (
    current_file,
    live_summary,
    read_live,
    request_stop,
    stop_request_path,
    writer_alive,
)
from simkit.io.netcdf import NetCDFWriter
from simkit.io.netcdf_combine import open_member_trees, write_groups
from simkit.io.recover import (
    Checkpoint,
    open_run_tree,
    read_attrs,
    recover,
    require_run_file,
    rewrite,
)
from simkit.io.zarr_paths import is_zarr

__all__ = [
    "AdjointStream",
    "BackgroundWriter",
    "CaptureWriter",
    "Checkpoint",
    "GradientVariable",
    "NetCDFWriter",
    "RunReader",
    "RunWriter",
    "check_replaceable",
    "current_file",
    "exclusive",
    "export_stream",
    "live_summary",
    "mark_gradients_stopped",
    "open_member_trees",
    "open_reader",
    "open_run_tree",
    "open_writer",
    "read_attrs",
    "read_live",
    "recover",
    "release",
    "request_stop",
    "require_run_file",
    "rewrite",
    "run_exists",
    "schema",
    "stop_request_path",
    "write_gradients",
    "write_groups",
    "writer_alive",
    "xarray_lock",
    "is_zarr",
]
