"""Fast forms of the lattice Boltzmann D2Q9 stages of ``cavity_lbm`` (its Array API stages are
their specification), per direction on (N, N) planes. NumPy and torch: in place into arrays of a
scratch pool, where the specification makes a dozen (9, N, N) temporaries a step. JAX: pure
functions in the forms XLA fuses into one loop per plane, where the specification's sums over the
direction axis become slow reductions and its rolls along the contiguous axis concatenates.
Velocities 0 and +-1 make the products with lattice vectors exact, so the moments come out as the
specification's sums give them (to the order of the sum).
"""

from __future__ import annotations

import numpy as np

from simkit.solver import ScratchPool


def _library(array):
    """NumPy or torch, whichever ``array`` belongs to: both have ``add``, ``multiply`` and
    ``subtract`` with ``out=``, and in-place operators on views."""
    if isinstance(array, np.ndarray):
        return np
    import torch

    return torch


def collide_inplace(f, directions: np.ndarray, weights: np.ndarray, tau: float,
                    pool: ScratchPool) -> tuple:
    """BGK collision: ``(post, rho, ux, uy)`` from populations ``f`` (9, N, N), only read; a
    NumPy array or a torch tensor, and the results the same.

    Args:
        f: populations.
        directions: the lattice vectors (9, 2) as integers (cx, cy).
        weights: the lattice weights (9,).
        tau: relaxation time.
        pool: where the results and work arrays come from.
    """
    xp = _library(f)
    plane = f[0]
    rho, ux, uy, usq, cu, feq = (pool.take(plane) for _ in range(6))
    xp.add(f[0], f[1], out=rho)
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
    xp.multiply(ux, ux, out=usq)
    xp.multiply(uy, uy, out=cu)
    usq += cu
    usq *= 1.5
    post = pool.take(f)
    for i in range(9):
        cx, cy = (int(c) for c in directions[i])
        # cu = cx ux + cy uy, exact for lattice vectors of 0 and +-1
        xp.multiply(ux, cx, out=cu)
        if cy:
            if cy == 1:
                cu += uy
            else:
                cu -= uy
        # feq = w rho (1 + 3 cu + 4.5 cu^2 - 1.5 |u|^2), grouped as the specification
        xp.multiply(cu, 4.5, out=feq)
        feq *= cu
        xp.multiply(cu, 3, out=post[i])
        post[i] += 1
        post[i] += feq
        post[i] -= usq
        xp.multiply(rho, float(weights[i]), out=feq)
        feq *= post[i]
        # post = f - (f - feq) / tau
        xp.subtract(f[i], feq, out=post[i])
        post[i] /= tau
        xp.subtract(f[i], post[i], out=post[i])
    return post, rho, ux, uy


def stream_inplace(post, shifts: list[tuple[int, int]], pool: ScratchPool):
    """Every population moved one link: ``roll(post[i], shifts[i], axis=(0, 1))``, by copies
    (NumPy arrays or torch tensors)."""
    streamed = pool.take(post)
    for i, (sy, sx) in enumerate(shifts):
        _roll_into(post[i], sy, sx, streamed[i])
    return streamed


def _roll_into(src, sy: int, sx: int, dst) -> None:
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


def bounce_inplace(post, streamed, rho, directions: np.ndarray, opposite: list[int],
                   lid_terms: list[float], pool: ScratchPool):
    """``where(wall, post[opposite] + moving * rho, streamed)`` into an array of ``pool``
    (NumPy arrays or torch tensors), writing only the wall sites, which are edge rows and
    columns: a population comes from (y - cy, x - cx), a wall where that lies outside.

    Args:
        post: populations after collision (9, ny, nx).
        streamed: populations after streaming (9, ny, nx).
        rho: density (ny, nx).
        directions: the lattice vectors (9, 2) as integers (cx, cy).
        opposite: the direction opposite each.
        lid_terms: per direction, the factor of ``rho`` that a population bounced off the moving
            wall at the last row gains (the specification's ``moving`` there).
        pool: where the result comes from.
    """
    xp = _library(post)
    out = pool.take(streamed)
    out[...] = streamed
    edges = {1: 0, -1: -1}  # the edge a population moving by +-1 leaves empty
    for i in range(9):
        cx, cy = (int(c) for c in directions[i])
        source = post[opposite[i]]
        if cx:
            out[i][:, edges[cx]] = source[:, edges[cx]]
        if cy:  # rows last: a corner on the lid row takes the lid term
            row = edges[cy]
            if cy == -1 and lid_terms[i]:
                xp.multiply(rho[row], lid_terms[i], out=out[i][row])
                out[i][row] += source[row]
            else:
                out[i][row] = source[row]
    return out


# ---------------------------------------------------------------------------------------- JAX


def collide_jax(f, directions: np.ndarray, weights: np.ndarray, tau: float) -> tuple:
    """``collide_numpy`` for a JAX array: ``(post, rho, ux, uy)``, a new array each.

    Measured at 256^2 (jitted steps): the specification's ``sum(f * cx, axis=0)`` over a
    (9, N, N) array costs 5x these sums of signed planes.
    """
    import jax.numpy as jnp

    planes = [f[i] for i in range(9)]
    rho = planes[0]
    for plane in planes[1:]:
        rho = rho + plane
    ux = _signed_sum(planes, directions[:, 0]) / rho
    uy = _signed_sum(planes, directions[:, 1]) / rho
    usq = 1.5 * (ux * ux + uy * uy)
    post = []
    for i, plane in enumerate(planes):
        cu = _signed_sum([ux, uy], directions[i])
        if cu is None:  # the rest population: cu = 0
            feq = float(weights[i]) * rho * (1 - usq)
        else:
            feq = float(weights[i]) * rho * (1 + 3 * cu + 4.5 * cu * cu - usq)
        post.append(plane - (plane - feq) / tau)
    return jnp.stack(post), rho, ux, uy


def _signed_sum(planes: list, coefficients) -> object:
    """``sum(c * p)`` for coefficients of 0 and +-1, as additions (None when all are 0)."""
    total = None
    for plane, c in zip(planes, coefficients, strict=True):
        c = int(c)
        if c == 0:
            continue
        if total is None:
            total = plane if c == 1 else -plane
        else:
            total = total + plane if c == 1 else total - plane
    return total


def stream_jax(post, shifts: list[tuple[int, int]]):
    """Every population moved one link: ``roll(post[i], shifts[i], axis=(0, 1))``.

    Rows move by ``roll`` along axis 0 (whole contiguous rows); columns by pad and select, which
    XLA fuses into the plane's loop (``_stencil.periodic_laplacian_jax`` measures the same).
    """
    import jax.numpy as jnp

    return jnp.stack([_roll_jax(post[i], sy, sx) for i, (sy, sx) in enumerate(shifts)])


def _roll_jax(u, sy: int, sx: int):
    """``roll(u, (sy, sx), axis=(0, 1))`` of a 2-D JAX array, shifts of -1, 0 or 1."""
    import jax.numpy as jnp
    from jax import lax

    if sy:
        u = jnp.roll(u, sy, axis=0)
    if sx == 0:
        return u
    column = lax.broadcasted_iota(jnp.int32, u.shape, 1)
    if sx == 1:
        return jnp.where(column == 0, u[:, -1:], jnp.pad(u[:, :-1], ((0, 0), (1, 0))))
    return jnp.where(column == u.shape[1] - 1, u[:, :1], jnp.pad(u[:, 1:], ((0, 0), (0, 1))))


def bounce_jax(post, streamed, rho, directions: np.ndarray, opposite: list[int],
               lid_terms: list[float]):
    """``where(wall, post[opposite] + moving * rho, streamed)`` with the wall and the lid found
    from the direction and the cell's row and column, not read from (9, N, N) mask arrays.
    Arguments as ``bounce_inplace``'s (without ``pool``).
    """
    import jax.numpy as jnp
    from jax import lax

    shape = rho.shape
    row = lax.broadcasted_iota(jnp.int32, shape, 0)
    column = lax.broadcasted_iota(jnp.int32, shape, 1)
    # A population comes from (y - cy, x - cx): a wall where that lies outside.
    outside = {("x", 1): column == 0, ("x", -1): column == shape[1] - 1,
               ("y", 1): row == 0, ("y", -1): row == shape[0] - 1}
    out = []
    for i in range(9):
        cx, cy = (int(c) for c in directions[i])
        masks = [outside[axis, c] for axis, c in (("x", cx), ("y", cy)) if c]
        if not masks:
            out.append(streamed[i])
            continue
        wall = masks[0] if len(masks) == 1 else masks[0] | masks[1]
        bounced = post[opposite[i]]
        if cy == -1 and lid_terms[i]:
            bounced = bounced + jnp.where(outside["y", -1], lid_terms[i], 0.0) * rho
        out.append(jnp.where(wall, bounced, streamed[i]))
    return jnp.stack(out)
