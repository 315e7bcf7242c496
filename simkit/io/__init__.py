"""Output: capture records to one NetCDF4 file per run, and reading such files back."""

from simkit.io import schema
from simkit.io.background import BackgroundWriter
from simkit.io.netcdf import NetCDFWriter

__all__ = ["BackgroundWriter", "NetCDFWriter", "schema"]
