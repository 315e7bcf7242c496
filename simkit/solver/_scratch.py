"""Scratch arrays that an in-place NumPy or torch kernel reuses once nothing else holds them.

A stage returns a new state and never writes into its input, so a kernel that wants no allocation
per step must know when an array it returned earlier is free again: here, when no one but the pool
holds a reference to it. A NumPy view keeps its base alive, so it counts as a holder; a torch view
made under ``inference_mode`` holds only the storage, so for torch the storage's use count is asked
too.
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


def _torch_free_storage_count() -> int:
    """The storage use count of a torch tensor that nothing shares (measured, as above)."""
    import torch

    tensor = torch.empty(1)
    return torch._C._storage_Use_Count(tensor.untyped_storage()._cdata)


class ScratchPool:
    """NumPy arrays (or torch tensors) reused across calls of one kernel.

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
        self._torch_free: int | None = None

    def take(self, like):
        """A scratch array shaped and typed like ``like`` (contents undefined): a NumPy array,
        or a torch tensor on ``like``'s device when ``like`` is one."""
        torch_like = not isinstance(like, np.ndarray) and type(like).__module__.startswith("torch")
        key = (like.shape, like.dtype, str(like.device) if torch_like else None)
        with self._lock:
            arrays = self._arrays.setdefault(key, [])
            for array in arrays:
                if sys.getrefcount(array) == _FREE and (
                        not torch_like or self._storage_free(array)):
                    return array
            if torch_like:
                import torch

                array = torch.empty(like.shape, dtype=like.dtype, device=like.device)
            else:
                array = np.empty(like.shape, dtype=like.dtype)
            if len(arrays) < self.size:
                arrays.append(array)
            return array

    def _storage_free(self, tensor) -> bool:
        import torch

        if self._torch_free is None:
            self._torch_free = _torch_free_storage_count()
        return torch._C._storage_Use_Count(tensor.untyped_storage()._cdata) == self._torch_free
