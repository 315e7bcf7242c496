"""Grid helpers shared by the solvers: the five-point Laplacian and uniform-grid coordinates."""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace

from simkit.solver import Coordinate


def periodic_laplacian(u, inv_h2: float):
    """Five-point Laplacian of ``u`` on a periodic grid with spacing ``h`` (``inv_h2 = 1/h^2``)."""
    xp = array_namespace(u)
    return (xp.roll(u, 1, axis=0) + xp.roll(u, -1, axis=0)
            + xp.roll(u, 1, axis=1) + xp.roll(u, -1, axis=1) - 4 * u) * inv_h2


def grid_coordinates(shape, spacing: float, units: str = "m") -> list[Coordinate]:
    """``y`` and ``x`` node positions of a uniform grid."""
    ny, nx = shape
    return [Coordinate("y", np.arange(ny) * spacing, units, "y position"),
            Coordinate("x", np.arange(nx) * spacing, units, "x position")]
