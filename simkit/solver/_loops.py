"""``repeat``: a fixed-count loop inside a stage that stays one loop when compiled.

A Python loop in a stage is unrolled by ``jax.jit`` and by ``torch.compile`` (slow to compile for
hundreds of iterations); on JAX arrays this runs ``lax.fori_loop`` instead, under
``torch.compile`` a ``while_loop`` of the graph, elsewhere a plain loop.
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
            return _torch_while_loop(count, body, carry)
    return _loop(count, body, carry)


def _loop(count: int, body: Callable[[Any], Any], carry: tuple) -> tuple:
    for _ in range(count):
        carry = body(carry)
    return carry


def _torch_while_loop(count: int, body: Callable[[Any], Any], carry: tuple) -> tuple:
    """The loop as one ``while_loop`` of the graph ``torch.compile`` traces, where unrolling it
    would take minutes to compile (and a graph break would leave the stage's code around it
    eager)."""
    import torch
    from torch._higher_order_ops import while_loop

    def more(i: Any, *_: Any) -> Any:
        return i < count

    # The loop's carry holds distinct tensors of one layout: contiguous copies (a stage's views
    # are strided, and a carry may hold one array twice).
    def own(values: Any) -> tuple:
        return tuple(torch.clone(value, memory_format=torch.contiguous_format)
                     for value in values)

    def step(i: Any, *values: Any) -> tuple:
        return (i + 1, *own(body(tuple(values))))

    start = torch.zeros((), dtype=torch.int64, device=carry[0].device)
    _, *out = while_loop(more, step, (start, *own(carry)))
    return tuple(out)
