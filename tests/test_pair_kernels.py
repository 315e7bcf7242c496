"""The tiled N-body pair sums (``solvers._pairs``) against the Array API acceleration of
``NBody``: the acceleration itself (not diluted into a velocity update), across tile edges, with
and without softening, on every array library."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import require_backend
from solvers import _pairs
from solvers.nbody import NBody, NBodyParams


def _bodies(n: int, dtype: str, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Off the origin on purpose: the kernels centre the bodies, the specification does not.
    x = (rng.standard_normal((n, 3)) + [5.0, -2.0, 1.0]).astype(dtype)
    return x, (0.5 + rng.random(n)).astype(dtype) / n


def _in(library: str, array: np.ndarray):
    if library == "jax":
        import jax.numpy as jnp

        return jnp.asarray(array)
    if library == "torch":
        import torch

        return torch.asarray(array)
    return array


def _host(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.array(value, copy=True)


def _acceleration(library: str, x, mass, gravity, eps2, tile: int):
    if library == "jax":
        import jax

        return jax.jit(lambda x, m: _pairs.acceleration_jax(x, m, gravity, eps2, tile=tile))(
            x, mass)
    if library == "numpy":
        return _pairs.acceleration_numpy(x, mass, gravity, eps2)
    return _pairs.acceleration_torch(x, mass, gravity, eps2)


@pytest.mark.parametrize("library", ["numpy", "jax", "torch"])
@pytest.mark.parametrize("softening", [0.0, 0.05])
@pytest.mark.parametrize("n", [2, 37, 300])
def test_tiled_acceleration_matches_direct_sum(library, softening, n, monkeypatch):
    if library != "numpy":
        require_backend(library)
    if library == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    # Tiles of 16 targets: several tiles and a ragged last one (one tile when n = 2).
    monkeypatch.setattr(_pairs, "HOST_TILE_BYTES", 16 * n * 8)
    monkeypatch.setattr(_pairs, "TORCH_TILE_BYTES", 16 * n * 8)
    solver = NBody(NBodyParams(bodies=n, gravity=1.5, softening=softening))
    x, mass = _bodies(n, "float64")
    want = solver._acceleration(x, mass)
    got = np.asarray(_acceleration(library, _in(library, x), _in(library, mass), 1.5,
                                   softening**2, tile=16))
    assert got.shape == (n, 3) and got.dtype == np.float64
    # Rounding of the rearranged sum: machine epsilon times |x| / closest distance (docstring).
    closest = np.sqrt(min(np.sum((x[i] - x[j]) ** 2) + softening**2
                          for i in range(n) for j in range(i)))
    tolerance = 1e-15 * 8 / closest * np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance)


@pytest.mark.parametrize("library", ["numpy", "jax", "torch"])
def test_own_weight_never_enters_the_sum(library):
    """A body's weight on itself (m / eps^3 with softening: huge) is left out, not cancelled:
    two bodies far apart still feel exactly G m / d^2 each."""
    if library != "numpy":
        require_backend(library)
    if library == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    x, mass = np.array([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0]]), np.array([2.0, 3.0])
    got = np.asarray(_acceleration(library, _in(library, x), _in(library, mass), 1.0, 1e-12,
                                   tile=16))
    want = np.array([[3.0 / 100**2, 0, 0], [-2.0 / 100**2, 0, 0]])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_host_kernels_reuse_work_arrays_without_touching_inputs(library):
    """Two calls in a row give the same answer (work arrays reused, nothing left over from the
    first), and the inputs are only read."""
    if library == "torch":
        require_backend("torch")
    x, mass = _bodies(200, "float64")
    x_in, m_in = _in(library, x.copy()), _in(library, mass.copy())
    first = _host(_acceleration(library, x_in, m_in, 1.0, 1e-4, tile=0))
    other = _acceleration(library, _in(library, x[::-1].copy()), _in(library, mass[::-1].copy()),
                          1.0, 1e-4, tile=0)
    second = _host(_acceleration(library, x_in, m_in, 1.0, 1e-4, tile=0))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(np.asarray(other)[::-1], first, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(x_in), x)
    np.testing.assert_array_equal(np.asarray(m_in), mass)


def test_pair_forces_cancel_in_total_momentum():
    """Newton's third law survives the rearrangement: sum_i m_i a_i stays at round-off of the
    largest single force."""
    x, mass = _bodies(500, "float64")
    a = _pairs.acceleration_numpy(x, mass, 1.0, 1e-4)
    force = mass[:, None] * a
    assert np.abs(force.sum(axis=0)).max() < 1e-11 * np.abs(force).max()
