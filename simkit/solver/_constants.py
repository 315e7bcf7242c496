"""Constant arrays (wave numbers, masks, index grids) made once per backend, device and dtype.

Stage code asks for them with an array of the state, so they land on the state's device with
its dtype and are never rebuilt inside the step loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
from array_api_compat import array_namespace, device, is_torch_array


class Constants:
    """Builds host constants once, and their device copies once per (library, device, dtype).

    Args:
        build: returns a mapping of names to NumPy arrays; float arrays take the dtype of the
            array they are asked for with (real or complex), integer and boolean arrays keep
            theirs.
    """

    def __init__(self, build: Callable[[], dict[str, np.ndarray]]) -> None:
        self._build = build
        self._host: dict[str, np.ndarray] | None = None
        self._cache: dict[tuple, dict] = {}

    def like(self, array) -> dict:
        """The constants in ``array``'s namespace, on its device, floats in its dtype (complex
        when ``array`` is complex, so products need no mixed-kind promotion).

        A compiled loop (``torch.compile``) may only read constants made before it was compiled:
        the backends run one eager step first, and the look-up below uses nothing but the array's
        type, dtype and device, which a graph tracer folds to constants.
        """
        if _is_traced(array):
            # Under jax.jit the constants become literals of the program: nothing to cache.
            return self._make(array)
        key = (type(array), str(array.dtype), str(array.device))
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._make(array)
        return found

    def _make(self, array) -> dict:
        xp = array_namespace(array)
        if self._host is None:
            self._host = self._build()
        found = {}
        with _ordinary(array):
            for name, value in self._host.items():
                dtype = array.dtype if np.issubdtype(value.dtype, np.floating) else None
                found[name] = xp.asarray(value, dtype=dtype, device=device(array))
        return found


def _ordinary(array) -> contextlib.AbstractContextManager:
    """Where torch constants are made: outside inference mode, so that one tensor serves
    inference (the run's loop) and autograd (a differentiated step, the torch backend's first
    call before it compiles) alike."""
    if is_torch_array(array):
        import torch

        return torch.inference_mode(False)
    return contextlib.nullcontext()


def _is_traced(array) -> bool:
    # A JAX tracer has no concrete device to key a cache on.
    return type(array).__name__.endswith("Tracer")
