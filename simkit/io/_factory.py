"""The one place run files' readers and writers are built (NetCDF4 is the format)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from simkit.io import netcdf_gradients, schema
from simkit.io._protocol import AdjointStream, GradientVariable, RunReader, RunWriter
from simkit.io.netcdf import NetCDFWriter
from simkit.io.netcdf_reader import NetCDFReader


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
