"""Gradients in a run file, under their former names: the writers are ``simkit.io.write_gradients``
and ``simkit.io.mark_gradients_stopped``, the names of their attributes and variables are in
``simkit.io.schema``."""

from __future__ import annotations

from simkit.io._factory import mark_gradients_stopped as mark_stopped
from simkit.io._factory import write_gradients
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

