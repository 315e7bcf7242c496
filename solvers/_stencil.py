"""Fast forms of the five-point Laplacian, for stage kernels: XLA-friendly on JAX, in place on
NumPy and torch. ``solvers._grid.periodic_laplacian`` (and each solver's own Array API code) is
their specification; every kernel built on them is held to it by the kernel tests.
"""

from __future__ import annotations

import functools

import numpy as np

from simkit.solver import ScratchPool


def periodic_laplacian_jax(u, inv_h2: float):
    """``periodic_laplacian`` for a 2-D JAX array, in the same order of operations.

    All four neighbours come from pad and select (the wrapped row or column broadcast where the
    pad leaves a zero), which XLA fuses into the one loop of the sum; a roll becomes concatenates
    that it does not fuse (measured, heat2d step: 0.052 against 0.078 ms at 256^2 with rolled
    rows, 0.081 against 0.113 at 512^2; 2-3x against rolls along both axes at 2048^2). Its
    derivative is taken through the rolled-rows form (``_tangent_form``): the transpose of a
    broadcast row is a reduction over the grid, which made one step's vjp 1.4x slower.
    """
    return _jax_laplacian()(u, inv_h2)


@functools.cache
def _jax_laplacian():
    """The custom-JVP Laplacian, made on first use (JAX is imported only where it runs)."""
    import jax

    @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
    def laplacian(u, inv_h2):
        return _select_form(u, inv_h2)

    @laplacian.defjvp
    def jvp(inv_h2, primals, tangents):
        (u,), (t,) = primals, tangents
        # The map is linear: its tangent is the same Laplacian of the tangent, in the form whose
        # transpose (reverse mode) is cheapest.
        return laplacian(u, inv_h2), _tangent_form(t, inv_h2)

    return laplacian


def _select_form(u, inv_h2: float):
    import jax.numpy as jnp
    from jax import lax

    row = lax.broadcasted_iota(jnp.int32, u.shape, 0)
    column = lax.broadcasted_iota(jnp.int32, u.shape, 1)
    up = jnp.where(row == 0, u[-1:, :], jnp.pad(u[:-1], ((1, 0), (0, 0))))
    down = jnp.where(row == u.shape[0] - 1, u[:1, :], jnp.pad(u[1:], ((0, 1), (0, 0))))
    left = jnp.where(column == 0, u[:, -1:], jnp.pad(u[:, :-1], ((0, 0), (1, 0))))
    right = jnp.where(column == u.shape[1] - 1, u[:, :1], jnp.pad(u[:, 1:], ((0, 0), (0, 1))))
    return (up + down + left + right - 4 * u) * inv_h2


def _tangent_form(u, inv_h2: float):
    """The same Laplacian with rows by ``roll`` (whole rows moved) and columns by pad and
    select."""
    import jax.numpy as jnp
    from jax import lax

    column = lax.broadcasted_iota(jnp.int32, u.shape, 1)
    left = jnp.where(column == 0, u[:, -1:], jnp.pad(u[:, :-1], ((0, 0), (1, 0))))
    right = jnp.where(column == u.shape[1] - 1, u[:, :1], jnp.pad(u[:, 1:], ((0, 0), (0, 1))))
    return (jnp.roll(u, 1, axis=0) + jnp.roll(u, -1, axis=0) + left + right - 4 * u) * inv_h2


def laplacian_numpy(u: np.ndarray, inv_h2: float, pool: ScratchPool, *, periodic: bool = True
                    ) -> np.ndarray:
    """The five-point Laplacian of a 2-D NumPy array into an array of ``pool``, in the order of
    operations of the Array API form (the result is the same to the last bit).

    Periodic: ``periodic_laplacian``. Not periodic: the stencil on interior points, zero on the
    edges (heat2d's fixed boundary). ``u`` is only read.
    """
    lap, four_u = pool.take(u), pool.take(u)
    if periodic:
        np.add(u[:-2], u[2:], out=lap[1:-1])
        np.add(u[-1], u[1], out=lap[0])
        np.add(u[-2], u[0], out=lap[-1])
        # Column neighbours as one contiguous shift of the flat array (NumPy's fast path; a 2-D
        # strided slice goes through 192 KiB of iterator buffers per call), then the one edge
        # column that took its neighbour from the wrong row is redone from a saved copy. Left
        # neighbours everywhere before right ones: the specification's order of the sum.
        flat_lap, flat_u, edge = lap.reshape(-1), u.reshape(-1), pool.take(u[:, 0])
        np.copyto(edge, lap[:, 0])
        flat_lap[1:] += flat_u[:-1]
        np.add(edge, u[:, -1], out=lap[:, 0])
        np.copyto(edge, lap[:, -1])
        flat_lap[:-1] += flat_u[1:]
        np.add(edge, u[:, 0], out=lap[:, -1])
        np.multiply(u, 4, out=four_u)
        lap -= four_u
        if inv_h2 != 1:  # x * 1 is x to the bit: a pass saved at unit spacing
            lap *= inv_h2
        return lap
    inner, four_inner = lap[1:-1, 1:-1], four_u[1:-1, 1:-1]
    np.add(u[:-2, 1:-1], u[2:, 1:-1], out=inner)
    inner += u[1:-1, :-2]
    inner += u[1:-1, 2:]
    np.multiply(u[1:-1, 1:-1], 4, out=four_inner)
    inner -= four_inner
    if inv_h2 != 1:
        inner *= inv_h2
    lap[0], lap[-1], lap[:, 0], lap[:, -1] = 0, 0, 0, 0
    return lap


def axpy_numpy(x: np.ndarray, a, y: np.ndarray, pool: ScratchPool) -> np.ndarray:
    """``y + a * x`` into an array of ``pool`` (the product rounded first, as written)."""
    out = pool.take(y)
    np.multiply(x, a, out=out)
    out += y
    return out


def laplacian_torch(u, inv_h2: float, pool: ScratchPool, *, periodic: bool = True):
    """``laplacian_numpy`` for a 2-D torch tensor: the five-point Laplacian into a tensor of
    ``pool`` (``out=`` and in-place updates, no temporaries), in the order of operations of the
    Array API form. ``u`` is only read."""
    import torch

    lap = pool.take(u)
    if periodic:
        torch.add(u[:-2], u[2:], out=lap[1:-1])
        torch.add(u[-1], u[1], out=lap[0])
        torch.add(u[-2], u[0], out=lap[-1])
        lap[:, 1:] += u[:, :-1]
        lap[:, :1] += u[:, -1:]
        lap[:, :-1] += u[:, 1:]
        lap[:, -1:] += u[:, :1]
        lap.add_(u, alpha=-4)
        return lap.mul_(inv_h2) if inv_h2 != 1 else lap
    inner = lap[1:-1, 1:-1]
    torch.add(u[:-2, 1:-1], u[2:, 1:-1], out=inner)
    inner += u[1:-1, :-2]
    inner += u[1:-1, 2:]
    inner.add_(u[1:-1, 1:-1], alpha=-4)
    if inv_h2 != 1:
        inner.mul_(inv_h2)
    lap[0], lap[-1], lap[:, 0], lap[:, -1] = 0, 0, 0, 0
    return lap


def axpy_torch(x, a, y, pool: ScratchPool):
    """``y + a * x`` into a tensor of ``pool``, one pass (``a`` a number or a 0-d tensor)."""
    import torch

    out = pool.take(y)
    if isinstance(a, torch.Tensor):
        return torch.addcmul(y, x, a, out=out)
    return torch.add(y, x, alpha=a, out=out)


def eager_torch(kernel, specification):
    """``kernel`` where a torch kernel may write into its own scratch tensors, else
    ``specification``: while ``torch.compile`` traces the step (a graph owns its buffers) and
    when autograd records it (in-place updates of scratch would break the graph)."""

    def stage(state, dt):
        import torch

        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(
                isinstance(v, torch.Tensor) and v.requires_grad for v in (dt, *state.values()))):
            return specification(state, dt)
        return kernel(state, dt)

    stage.__name__ = getattr(kernel, "__name__", "kernel")
    return stage
