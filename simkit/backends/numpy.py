"""The NumPy backend: the reference, a plain loop on the CPU."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import array_api_compat.numpy as xp
import numpy as np

from simkit.backends._base import (
    STEP_DTYPE,
    TIME_DTYPE,
    AbstractBackend,
    check_options,
    host_copy,
    no_gpu,
)


class NumpyBackend(AbstractBackend):
    name = "numpy"

    def __init__(self, device: str = "cpu", dtype: str = "float64",
                 compile: bool | None = None) -> None:  # noqa: A002 - nothing to compile
        check_options(self.name, device, dtype)
        if device == "gpu":
            raise no_gpu(self.name)
        self.dtype = getattr(xp, dtype)

    @property
    def device(self) -> str:
        return "cpu"

    def asarray(self, host: np.ndarray, cast: bool = True) -> np.ndarray:
        return np.array(host, dtype=self.dtype if cast else None, copy=True)

    def scalars(self, dt: float, step: int, time: float) -> tuple[np.ndarray, ...]:
        return (np.asarray(dt, dtype=self.dtype), np.asarray(step, dtype=STEP_DTYPE),
                np.asarray(time, dtype=TIME_DTYPE))

    def call(self, fn: Any, *args: Any) -> Any:
        return fn(*args)

    def synchronize(self, arrays: Any) -> None:
        return None

    def to_host(self, arrays: Mapping[str, np.ndarray],
                out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        out = out or {}
        return {name: host_copy(value, out.get(name)) for name, value in arrays.items()}
