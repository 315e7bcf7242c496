"""Parallel numba loops for the five-point stencil: the NumPy kernels' fast path when the optional
``numba`` extra is installed, on grids large enough for threads to pay (``SIMKIT_NUMBA=0`` turns
it off, ``always`` on at any size). Without numba, the in-place NumPy forms of ``_stencil`` run
instead; both are held to the Array API stages by the kernel tests.

Each loop keeps the specification's order of operations (no ``fastmath``: sums are not
reassociated) and its precision (scalars come in the arrays' dtype: numba would widen a float32
sum with a Python number to float64), so it gives the specification's numbers to the last bit.
Rows are spread over the threads (``prange``); within a row the interior runs without branches,
so it vectorizes.
"""

from __future__ import annotations

import importlib.util
import os

#: Set to 0 to keep the NumPy kernels off numba even where it is installed, ``always`` to use it
#: at any grid size.
NUMBA_ENV = "SIMKIT_NUMBA"
#: Cells from which the numba loops are used: on smaller grids the in-place NumPy kernels are as
#: fast, and two parallel regions per step cost more than they give once the cores are shared
#: (a test run on 2 workers with 2 threads each was 10x slower at 256^2).
NUMBA_MIN_CELLS = 1024 * 1024

_LOOPS: dict[str, object] = {}


def available(cells: int) -> bool:
    """Whether the numba loops are used on a grid of ``cells``: numba installed, not turned
    off, and the grid large enough (or ``always``)."""
    setting = os.environ.get(NUMBA_ENV, "1").strip().lower()
    if setting == "0" or importlib.util.find_spec("numba") is None:
        return False
    return setting == "always" or cells >= NUMBA_MIN_CELLS


def loops() -> dict:
    """The compiled loops, built on first use (numba compiles each for its argument types when
    first called)."""
    if not _LOOPS:
        _LOOPS.update(_build())
    return _LOOPS


def _build() -> dict:
    import numba

    jit = numba.njit(parallel=True, cache=False, fastmath=False)

    # Each Laplacian loop also writes ``u + factor * lap``, heat2d's update, in the same pass:
    # the two stages' loops apart read and write five arrays a step where this touches three
    # (at 512^2: 92 us a step against 60). Without ``keep`` it writes only the update, as a
    # whole step does (54 us; one hand-written loop 53); ``out`` is not touched then.
    @numba.njit(inline="always")
    def interior(up, down, row, lap, ahead, inv_h2, four, factor, keep):
        # Points 1 .. nx-2 of a row; the store decided outside the loop, which a branch inside
        # would stop vectorizing.
        if keep:
            for j in range(1, row.shape[0] - 1):
                value = (((up[j] + down[j]) + row[j - 1]) + row[j + 1] - four * row[j]) * inv_h2
                lap[j] = value
                ahead[j] = row[j] + factor * value
        else:
            for j in range(1, row.shape[0] - 1):
                value = (((up[j] + down[j]) + row[j - 1]) + row[j + 1] - four * row[j]) * inv_h2
                ahead[j] = row[j] + factor * value

    @jit
    def periodic_laplacian_update(u, inv_h2, four, factor, out, new, keep):
        ny, nx = u.shape
        for i in numba.prange(ny):
            up, down = u[(i - 1) % ny], u[(i + 1) % ny]
            row, lap, ahead = u[i], out[i], new[i]
            first = (((up[0] + down[0]) + row[nx - 1]) + row[1] - four * row[0]) * inv_h2
            last = (((up[nx - 1] + down[nx - 1]) + row[nx - 2]) + row[0]
                    - four * row[nx - 1]) * inv_h2
            interior(up, down, row, lap, ahead, inv_h2, four, factor, keep)
            ahead[0], ahead[nx - 1] = row[0] + factor * first, row[nx - 1] + factor * last
            if keep:
                lap[0], lap[nx - 1] = first, last

    @jit
    def fixed_laplacian_update(u, inv_h2, four, factor, out, new, keep):
        ny, nx = u.shape
        zero = four - four  # +0 in the arrays' dtype
        for i in numba.prange(ny):
            row, lap, ahead = u[i], out[i], new[i]
            if i == 0 or i == ny - 1:
                for j in range(nx):
                    ahead[j] = row[j] + factor * zero  # as the update: -0 becomes +0
                    if keep:
                        lap[j] = zero
                continue
            interior(u[i - 1], u[i + 1], row, lap, ahead, inv_h2, four, factor, keep)
            ahead[0], ahead[nx - 1] = row[0] + factor * zero, row[nx - 1] + factor * zero
            if keep:
                lap[0], lap[nx - 1] = zero, zero

    @jit
    def axpy(x, a, y, out):
        ny = x.shape[0]
        for i in numba.prange(ny):
            xi, yi, oi = x[i], y[i], out[i]
            for j in range(x.shape[1]):
                oi[j] = yi[j] + a * xi[j]

    return {"periodic_laplacian_update": periodic_laplacian_update,
            "fixed_laplacian_update": fixed_laplacian_update, "axpy": axpy}
