"""``repeat``: a fixed-count loop inside a stage that stays one loop when compiled.

A Python loop in a stage is unrolled by ``jax.jit`` (slow to compile for hundreds of iterations);
on JAX arrays this runs ``lax.fori_loop`` instead, elsewhere a plain loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from array_api_compat import is_jax_array


def repeat(count: int, body: Callable[[Any], Any], carry: tuple) -> tuple:
    """Apply ``body`` to the tuple of arrays ``carry`` ``count`` times."""
    if any(is_jax_array(value) for value in carry):
        import jax

        return jax.lax.fori_loop(0, count, lambda _, c: body(c), carry)
    for _ in range(count):
        carry = body(carry)
    return carry
