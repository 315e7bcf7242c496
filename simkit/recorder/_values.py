"""Values a loop passes to a recorder: host copies, and the dtype a file stores them in."""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import device, is_jax_array, is_torch_array

from simkit.errors import ScenarioError

#: Dtypes a NetCDF file has no type for, stored in the narrowest one that holds them exactly.
_WIDENED = {"float16": "float32", "bfloat16": "float32", "bool": "int8"}


def library_device(value: Any) -> tuple[str, str] | None:
    """The library of an array and its device (None: not an array)."""
    if not hasattr(value, "shape"):
        return None
    library = "torch" if is_torch_array(value) else "jax" if is_jax_array(value) else "numpy"
    try:
        return library, str(device(value)) if library != "numpy" else "cpu"
    except Exception:  # noqa: BLE001 - a device that cannot be named: the default
        return library, "cpu"


def to_host(value: Any, dtype: Any = None) -> np.ndarray:
    """A host copy of ``value`` (never a view of it: later in-place updates cannot reach it)."""
    if not isinstance(value, (np.ndarray, float, int)) and is_torch_array(value):
        tensor = value.detach()
        if tensor.is_floating_point() and tensor.element_size() < 4:
            tensor = tensor.float()  # bfloat16 and float8 have no NumPy dtype: float32 holds them
        host = tensor.numpy().copy() if tensor.device.type == "cpu" else tensor.cpu().numpy()
    else:
        host = np.array(value, copy=True)  # a JAX array on CPU may otherwise be a read-only view
    return host if dtype is None else host.astype(dtype, copy=False)


def dtype_name(value: Any) -> str:
    """The dtype of ``value`` by name (``str`` and ``bytes`` for text of any length)."""
    if isinstance(value, (bool, int, float)):
        return "float64"
    if not isinstance(value, (np.ndarray, float, int)) and is_torch_array(value):
        return str(value.dtype).removeprefix("torch.")
    dtype = np.dtype(value.dtype if hasattr(value, "shape") and hasattr(value, "dtype")
                     else np.asarray(value).dtype)
    return {"U": "str", "S": "bytes"}.get(dtype.kind, str(dtype.name))


def castable(given: str, target: str) -> bool:
    """Whether values of dtype ``given`` are real numbers that cast to ``target`` within their
    kind (never complex to real, nor floats to integers)."""
    stored = _WIDENED.get(given, given)
    try:
        return np.dtype(stored).kind in "iuf" and np.can_cast(stored, target, "same_kind")
    except TypeError:  # a dtype NumPy does not know (float8 and the like are widened first)
        return False


def shape_dtype(name: str, value: Any) -> tuple[tuple[int, ...], str]:
    """The shape of ``value`` and the dtype it is stored in.

    Raises:
        ScenarioError: ``value`` is not real numbers (complex, text, objects).
    """
    given = dtype_name(value)
    if not castable(given, "float64"):
        raise ScenarioError(f"expected real numbers (booleans, integers or floats) to record, "
                            f"given an array of {given}", key=name)
    return tuple(np.shape(value)), _WIDENED.get(given, given)
