"""Output: capture records to one NetCDF4 file per run, and reading such files back."""

from simkit.io import schema
from simkit.io._lock import hdf5_lock, xarray_lock
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
from simkit.io.recover import (
    Checkpoint,
    captured_steps,
    latest_checkpoint,
    open_run_tree,
    read_attrs,
    recover,
    rewrite,
    whole_captures,
    whole_captures_of,
)

__all__ = [
    "BackgroundWriter",
    "Checkpoint",
    "NetCDFWriter",
    "captured_steps",
    "current_file",
    "export_stream",
    "hdf5_lock",
    "latest_checkpoint",
    "live_summary",
    "open_run_tree",
    "read_attrs",
    "read_live",
    "request_stop",
    "recover",
    "rewrite",
    "schema",
    "stop_request_path",
    "whole_captures",
    "whole_captures_of",
    "writer_alive",
    "xarray_lock",
]
