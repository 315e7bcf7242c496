"""Output: capture records to one NetCDF4 file per run, and reading such files back.

Runs write through a ``RunWriter`` and read back through a ``RunReader`` (``open_writer`` and
``open_reader`` build them); only the ``simkit.io.netcdf*`` modules know the file format.
"""

from simkit.io import schema
from simkit.io._factory import open_reader, open_writer
from simkit.io._lock import hdf5_lock, xarray_lock
from simkit.io._protocol import (
    AdjointStream,
    CaptureWriter,
    FinalState,
    GradientVariable,
    RunReader,
    RunWriter,
    StreamCaptures,
    VariableInfo,
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
from simkit.io.netcdf_files import check_replaceable
from simkit.io.recover import (
    Checkpoint,
    captured_steps,
    latest_checkpoint,
    open_run_tree,
    read_attrs,
    recover,
    require_run_file,
    rewrite,
    whole_captures,
    whole_captures_of,
)

__all__ = [
    "AdjointStream",
    "BackgroundWriter",
    "CaptureWriter",
    "Checkpoint",
    "FinalState",
    "GradientVariable",
    "NetCDFWriter",
    "RunReader",
    "RunWriter",
    "StreamCaptures",
    "VariableInfo",
    "captured_steps",
    "check_replaceable",
    "current_file",
    "exclusive",
    "export_stream",
    "hdf5_lock",
    "latest_checkpoint",
    "live_summary",
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
    "schema",
    "stop_request_path",
    "whole_captures",
    "whole_captures_of",
    "writer_alive",
    "xarray_lock",
]
