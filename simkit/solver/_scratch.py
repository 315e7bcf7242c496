"""Scratch arrays that an in-place NumPy kernel reuses once nothing else holds them.

A stage returns a new state and never writes into its input, so a kernel that wants no allocation
per step must know when an array it returned earlier is free again: here, when no one but the pool
holds a reference to it (a view keeps its base alive, so a view counts as a holder too).
"""

from __future__ import annotations

import sys
import threading

import numpy as np


def _free_count() -> int:
    """The reference count ``_take`` sees for an array only the pool holds (measured, not
    assumed: it depends on the interpreter)."""
    arrays = [np.empty(0)]
    for array in arrays:
        return sys.getrefcount(array)
    raise AssertionError("unreachable")


_FREE = _free_count()


class ScratchPool:
    """NumPy arrays reused across calls of one kernel.

    ``take(like)`` gives an array of ``like``'s shape and dtype whose contents are undefined: one
    the pool made earlier if nothing outside the pool holds it any more (the caller dropped it,
    a capture copied it, the block loop moved on), else a new one. The pool keeps at most
    ``size`` arrays per shape and dtype; past that, new arrays are the caller's alone.

    Args:
        size: the most arrays kept per shape and dtype (a step that holds its input and makes a
            new state needs two per field).
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._arrays: dict[tuple, list[np.ndarray]] = {}
        # Two threads stepping runs of one solver object must never be handed the same array.
        self._lock = threading.Lock()

    def take(self, like: np.ndarray) -> np.ndarray:
        """A scratch array shaped and typed like ``like`` (contents undefined)."""
        key = (like.shape, like.dtype)
        with self._lock:
            arrays = self._arrays.setdefault(key, [])
            for array in arrays:
                if sys.getrefcount(array) == _FREE:
                    return array
            array = np.empty(like.shape, dtype=like.dtype)
            if len(arrays) < self.size:
                arrays.append(array)
            return array
