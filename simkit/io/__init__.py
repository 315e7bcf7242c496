"""Output: capture records to one NetCDF4 file per run, and reading such files back."""

from simkit.io import schema
from simkit.io._lock import hdf5_lock, xarray_lock
from simkit.io.background import BackgroundWriter
from simkit.io.export import export_stream
from simkit.io.netcdf import NetCDFWriter
from simkit.io.recover import (
    Checkpoint,
    captured_steps,
    latest_checkpoint,
    read_attrs,
    recover,
    rewrite,
    whole_captures,
)

__all__ = [
    "BackgroundWriter",
    "Checkpoint",
    "NetCDFWriter",
    "captured_steps",
    "export_stream",
    "hdf5_lock",
    "latest_checkpoint",
    "read_attrs",
    "recover",
    "rewrite",
    "schema",
    "whole_captures",
    "xarray_lock",
]
