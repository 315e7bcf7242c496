"""Gradients in a run file: adjoint streams beside the forward ones, derivatives of the objective
with respect to parameters and initial fields in the root group.

An adjoint stream has the layout of a forward stream (an unlimited ``step`` dimension, ``step``
and ``time`` coordinates, a CRC32 per capture, CF ``units`` and ``long_name`` on each variable);
its variables hold dL/du_k, in units of the objective per unit of the field. It is not listed in
the file's ``simkit_streams`` (resume and recover keep to the forward streams) but in
``simkit_gradient_streams``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from simkit.io import netcdf_gradients
from simkit.io._protocol import AdjointStream, GradientVariable
from simkit.io.schema import (
    ATTR_ADJOINT_OF,
    ATTR_CHECKPOINT,
    ATTR_GRADIENT_STREAMS,
    ATTR_GRADIENTS,
    ATTR_OBJECTIVE,
    ATTR_REUSED,
    GRADIENT_PREFIX,
    GRADIENTS_AWAITED,
    GRADIENTS_PENDING,
    GRADIENTS_WRITTEN,
    OBJECTIVE,
)

__all__ = [
    "ATTR_ADJOINT_OF",
    "ATTR_CHECKPOINT",
    "ATTR_GRADIENTS",
    "ATTR_GRADIENT_STREAMS",
    "ATTR_OBJECTIVE",
    "ATTR_REUSED",
    "AdjointStream",
    "GRADIENTS_AWAITED",
    "GRADIENTS_PENDING",
    "GRADIENTS_WRITTEN",
    "GRADIENT_PREFIX",
    "GradientVariable",
    "OBJECTIVE",
    "mark_stopped",
    "write_gradients",
]


def write_gradients(path: str | os.PathLike[str], objective: GradientVariable,
                    gradients: Sequence[GradientVariable], streams: Sequence[AdjointStream],
                    time_units: str, attrs: Mapping[str, object]) -> None:
    """Add the objective, its gradients and adjoint streams to the run file ``path``, whose
    forward run is whole, and mark it complete.

    Raises:
        ValueError: naming a variable or group that the file already holds.
    """
    netcdf_gradients.write_gradients(path, objective, gradients, streams, time_units, attrs)


def mark_stopped(path: str | os.PathLike[str], attrs: Mapping[str, object]) -> None:
    """Say in the run file ``path`` how the computation of its gradients stopped (``attrs``:
    status, end time, error); they stay ``pending``."""
    netcdf_gradients.mark_stopped(path, attrs)
