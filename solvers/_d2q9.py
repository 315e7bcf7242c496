"""Fast NumPy forms of the lattice Boltzmann D2Q9 stages of ``cavity_lbm`` (its Array API stages
are their specification): per direction on (N, N) planes into arrays of a scratch pool, where the
specification makes a dozen (9, N, N) temporaries a step. Velocities 0 and +-1 make the products
with lattice vectors exact, so the moments come out as the specification's sums give them.
"""

from __future__ import annotations

import numpy as np

from simkit.solver import ScratchPool


def collide_numpy(f: np.ndarray, directions: np.ndarray, weights: np.ndarray, tau: float,
                  pool: ScratchPool) -> tuple[np.ndarray, ...]:
    """BGK collision: ``(post, rho, ux, uy)`` from populations ``f`` (9, N, N), only read.

    Args:
        f: populations.
        directions: the lattice vectors (9, 2) as integers (cx, cy).
        weights: the lattice weights (9,).
        tau: relaxation time.
        pool: where the results and work arrays come from.
    """
    plane = f[0]
    rho, ux, uy, usq, cu, feq = (pool.take(plane) for _ in range(6))
    np.add(f[0], f[1], out=rho)
    for i in range(2, 9):
        rho += f[i]
    for velocity, axis in ((ux, 0), (uy, 1)):
        velocity[...] = 0
        for i in range(9):
            c = int(directions[i, axis])
            if c == 1:
                velocity += f[i]
            elif c == -1:
                velocity -= f[i]
        velocity /= rho
    np.multiply(ux, ux, out=usq)
    np.multiply(uy, uy, out=cu)
    usq += cu
    usq *= 1.5
    post = pool.take(f)
    for i in range(9):
        cx, cy = (int(c) for c in directions[i])
        # cu = cx ux + cy uy, exact for lattice vectors of 0 and +-1
        np.multiply(ux, cx, out=cu)
        if cy:
            cu += uy if cy == 1 else -uy
        # feq = w rho (1 + 3 cu + 4.5 cu^2 - 1.5 |u|^2), grouped as the specification
        np.multiply(cu, 4.5, out=feq)
        feq *= cu
        np.multiply(cu, 3, out=post[i])
        post[i] += 1
        post[i] += feq
        post[i] -= usq
        np.multiply(rho, float(weights[i]), out=feq)
        feq *= post[i]
        # post = f - (f - feq) / tau
        np.subtract(f[i], feq, out=post[i])
        post[i] /= tau
        np.subtract(f[i], post[i], out=post[i])
    return post, rho, ux, uy


def stream_numpy(post: np.ndarray, shifts: list[tuple[int, int]], pool: ScratchPool
                 ) -> np.ndarray:
    """Every population moved one link: ``roll(post[i], shifts[i], axis=(0, 1))``, by copies."""
    streamed = pool.take(post)
    for i, (sy, sx) in enumerate(shifts):
        _roll_into(post[i], sy, sx, streamed[i])
    return streamed


def _roll_into(src: np.ndarray, sy: int, sx: int, dst: np.ndarray) -> None:
    """``dst = roll(src, (sy, sx), axis=(0, 1))`` for shifts of -1, 0 or 1."""
    rows = _pieces(sy, src.shape[0])
    columns = _pieces(sx, src.shape[1])
    for to_r, from_r in rows:
        for to_c, from_c in columns:
            dst[to_r, to_c] = src[from_r, from_c]


def _pieces(shift: int, n: int) -> list[tuple[slice, slice]]:
    if shift == 0:
        return [(slice(None), slice(None))]
    if shift == 1:
        return [(slice(1, n), slice(0, n - 1)), (slice(0, 1), slice(n - 1, n))]
    return [(slice(0, n - 1), slice(1, n)), (slice(n - 1, n), slice(0, 1))]


def bounce_numpy(post: np.ndarray, streamed: np.ndarray, rho: np.ndarray, opposite: list[int],
                 wall_sites: list[np.ndarray], moving: np.ndarray, pool: ScratchPool
                 ) -> np.ndarray:
    """``where(wall, post[opposite] + moving * rho, streamed)``, touching only the wall sites
    (flat indices per direction, ``wall_sites``)."""
    out = pool.take(streamed)
    np.copyto(out, streamed)
    flat_rho = rho.reshape(-1)
    for i, sites in enumerate(wall_sites):
        if sites.size:
            out[i].reshape(-1)[sites] = (post[opposite[i]].reshape(-1)[sites]
                                         + moving[i].reshape(-1)[sites] * flat_rho[sites])
    return out
