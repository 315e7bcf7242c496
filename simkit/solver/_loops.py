"""``repeat``: a fixed-count loop inside a stage that stays one loop when compiled.

A Python loop in a stage is unrolled by ``jax.jit`` and by ``torch.compile`` (slow to compile for
hundreds of iterations); on JAX arrays this runs ``lax.fori_loop`` instead, under
``torch.compile`` an eager loop outside the graph, elsewhere a plain loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from array_api_compat import is_jax_array, is_torch_array


def repeat(count: int, body: Callable[[Any], Any], carry: tuple) -> tuple:
    """Apply ``body`` to the tuple of arrays ``carry`` ``count`` times."""
    if any(is_jax_array(value) for value in carry):
        import jax

        return jax.lax.fori_loop(0, count, lambda _, c: body(c), carry)
    if any(is_torch_array(value) for value in carry):
        import torch

        if torch.compiler.is_compiling():
            # One graph break: the loop runs eagerly between the compiled parts around it,
            # where unrolling it would take minutes to compile.
            return _eager_torch_loop()(count, body, carry)
    return _loop(count, body, carry)


def _loop(count: int, body: Callable[[Any], Any], carry: tuple) -> tuple:
    for _ in range(count):
        carry = body(carry)
    return carry


_EAGER_TORCH_LOOP: list[Any] = []


def _eager_torch_loop() -> Callable[[int, Callable[[Any], Any], tuple], tuple]:
    if not _EAGER_TORCH_LOOP:
        import torch

        _EAGER_TORCH_LOOP.append(torch.compiler.disable(_loop))
    return _EAGER_TORCH_LOOP[0]
