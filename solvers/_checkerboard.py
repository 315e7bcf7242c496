"""Fast forms of a checkerboard Metropolis half-sweep (``ising2d``'s stages, their specification):
the same counter-based draws, bit for bit, from 32-bit unsigned arithmetic.

``simkit.solver.counter_uniform`` hashes int64 arrays holding 32-bit values and splits every
multiplication in two so that no backend overflows; unsigned 32-bit integers wrap by definition,
so one multiplication per step of the hash gives the same bits at a fraction of the work. The
acceptance test and the flip are the specification's expressions in its order, so a kernel flips
exactly the spins the specification flips.
"""

from __future__ import annotations

import numpy as np

from simkit.solver import ScratchPool, hash32

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1
_MULTIPLIERS = (0x7FEB352D, 0x846CA68B)


def draw_key(seed, counter):
    """The key ``counter_uniform`` mixes into every site's number for one draw, in [0, 2^32):
    a scalar (an int64 array, traced under ``jax.jit``) computed as it does."""
    seed_part = ((seed & _MASK) * _GOLDEN) & _MASK  # Python ints: exact
    return hash32((seed_part ^ hash32(counter & _MASK)) & _MASK)


def _hash_u32(x):
    """lowbias32 on an unsigned 32-bit array (a new array; JAX)."""
    x = x ^ (x >> 16)
    x = x * np.uint32(_MULTIPLIERS[0])
    x = x ^ (x >> 15)
    x = x * np.uint32(_MULTIPLIERS[1])
    return x ^ (x >> 16)


def sweep_jax(s, index_u32, color, key, coupling, field, temperature):
    """One half-sweep of the sublattice ``color`` (bool mask) on a JAX spin array.

    Args:
        s: spins (+1/-1), float.
        index_u32: site numbers as uint32, the shape of ``s``.
        color: where spins may flip.
        key: ``draw_key(seed, counter)``.
        coupling, field, temperature: J, h and T of the model.
    """
    import jax.numpy as jnp

    neighbours = (jnp.roll(s, 1, axis=0) + jnp.roll(s, -1, axis=0)
                  + jnp.roll(s, 1, axis=1) + jnp.roll(s, -1, axis=1))
    cost = 2 * s * (coupling * neighbours + field)
    bits = _hash_u32(_hash_u32(index_u32 ^ key.astype(jnp.uint32)))
    draw = (bits >> 8).astype(s.dtype) * (1.0 / (1 << 24))
    flip = color & (draw < jnp.exp(-cost / temperature))
    return jnp.where(flip, -s, s)


def sweep_numpy(s: np.ndarray, index_u32: np.ndarray, color: np.ndarray, key, coupling, field,
                temperature, pool: ScratchPool) -> np.ndarray:
    """``sweep_jax`` on NumPy, into arrays of ``pool`` (no temporaries of the lattice's size);
    ``s`` is only read."""
    neighbours, cost = pool.take(s), pool.take(s)
    # roll(s, 1) + roll(s, -1) along each axis, by slices (integers: exact in any order)
    np.add(s[:-2], s[2:], out=neighbours[1:-1])
    np.add(s[-1], s[1], out=neighbours[0])
    np.add(s[-2], s[0], out=neighbours[-1])
    # Columns as one shift of the flat array (a 2-D strided slice costs 192 KiB of iterator
    # buffers a call), then the edge column that took a neighbour from the wrong row is redone.
    flat, flat_s, edge = neighbours.reshape(-1), s.reshape(-1), pool.take(s[:, 0])
    np.copyto(edge, neighbours[:, 0])
    flat[1:] += flat_s[:-1]
    np.add(edge, s[:, -1], out=neighbours[:, 0])
    np.copyto(edge, neighbours[:, -1])
    flat[:-1] += flat_s[1:]
    np.add(edge, s[:, 0], out=neighbours[:, -1])
    np.multiply(neighbours, coupling, out=neighbours)
    neighbours += field
    np.multiply(s, 2, out=cost)
    cost *= neighbours
    np.negative(cost, out=cost)
    cost /= temperature
    np.exp(cost, out=cost)  # the acceptance probability
    bits = pool.take(index_u32)
    np.bitwise_xor(index_u32, np.uint32(int(key)), out=bits)
    for _ in range(2):
        _hash_u32_numpy(bits, pool)
    bits >>= 8
    draw = neighbours  # done with the neighbours: reuse
    np.copyto(draw, bits, casting="unsafe")  # a cast by copy: no ufunc buffers
    draw *= 1.0 / (1 << 24)
    flip = pool.take(color)
    np.less(draw, cost, out=flip)
    flip &= color
    out = pool.take(s)
    np.copyto(out, s)
    np.negative(out, out=out, where=flip)
    return out


def _hash_u32_numpy(x: np.ndarray, pool: ScratchPool) -> None:
    """lowbias32 on an unsigned 32-bit NumPy array, in place."""
    shifted = pool.take(x)
    for shift, multiplier in ((16, _MULTIPLIERS[0]), (15, _MULTIPLIERS[1])):
        np.right_shift(x, shift, out=shifted)
        x ^= shifted
        x *= np.uint32(multiplier)
    np.right_shift(x, 16, out=shifted)
    x ^= shifted
